package dev.moeport.format.torchdist;

import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * How Megatron-Core's torch_dist keys are presented, so that the export rules see the per-layer names
 * of a Megatron-Core state dict:
 * <ul>
 *   <li>{@code decoder.layers.<rest>} without a layer number holds every layer, stacked on a leading
 *       axis: layer {@code i} is presented as {@code decoder.layers.<i>.<rest>};</li>
 *   <li>expert weights carry a doubled name, {@code mlp.experts.experts.linear_fc1.weight} of shape
 *       {@code [E, out, in]}: presented as {@code mlp.experts.linear_fc1.weight}, the "stacked experts"
 *       form, whose expert {@code e} is a {@code select(e)};</li>
 *   <li>optimizer state, rng state, Transformer Engine {@code _extra_state} and ShardedObjects are
 *       skipped.</li>
 * </ul>
 */
final class MegatronKeys {
    private MegatronKeys() {}

    static final String LAYERS = "decoder.layers.";
    private static final Pattern LAYER_NUMBER = Pattern.compile("\\d+\\..*", Pattern.DOTALL);
    private static final Pattern DOUBLED_EXPERTS = Pattern.compile("(^|\\.)experts\\.experts\\.");

    /** Why a key is not a model tensor, or null when it is one. */
    static String skipReason(String key, boolean bytes) {
        if (key.startsWith("optimizer.") || key.equals("optimizer")) {
            return "optimizer state";
        }
        if (key.startsWith("rng_state")) {
            return "rng state";
        }
        if (key.contains("._extra_state") || key.startsWith("_extra_state")) {
            return "Transformer Engine extra state";
        }
        if (key.contains("/shard_")) {
            return "ShardedObject";
        }
        return bytes ? "pickled object" : null;
    }

    /** Whether {@code key} holds all layers on a leading axis (a homogeneous block's layer-stacked key). */
    static boolean isLayerStacked(String key) {
        return key.startsWith(LAYERS) && !LAYER_NUMBER.matcher(key).region(LAYERS.length(), key.length()).matches();
    }

    /** The name layer {@code layer} of a layer-stacked key is presented under. */
    static String layerName(String stackedKey, long layer) {
        return LAYERS + layer + "." + undoubled(stackedKey.substring(LAYERS.length()));
    }

    private static final Pattern LAYER = Pattern.compile("decoder\\.layers\\.(\\d+)\\.(.*)", Pattern.DOTALL);
    private static final Pattern EXPERT_STACK = Pattern.compile("(.*\\.mlp\\.experts)\\.(linear_fc\\d\\.(weight|bias))");

    /** The layer number of a per-layer name {@code decoder.layers.<i>.<rest>}, or -1. */
    static long layerOf(String name) {
        Matcher m = LAYER.matcher(name);
        return m.matches() ? Long.parseLong(m.group(1)) : -1;
    }

    /** A per-layer name as Megatron-Core keys it: under the layer-stacked key when {@code stack}, else as it is. */
    static String stackedOrNot(String name, boolean stack) {
        Matcher m = LAYER.matcher(name);
        return stack && m.matches() ? LAYERS + m.group(2) : name;
    }

    /** Whether {@code name} is a routed experts' stacked weight {@code mlp.experts.linear_fc<n>.weight [E, out, in]}. */
    static boolean isExpertStack(String name) {
        return EXPERT_STACK.matcher(name).matches();
    }

    /** A stacked experts' name with Megatron's doubled {@code experts.experts.}: the form its checkpoints key. */
    static String doubled(String name) {
        Matcher m = EXPERT_STACK.matcher(name);
        return m.matches() ? m.group(1) + ".experts." + m.group(2) : name;
    }

    /** {@code key} with Megatron's doubled {@code experts.experts.} folded into one. */
    static String undoubled(String key) {
        return DOUBLED_EXPERTS.matcher(key).replaceAll("$1experts.");
    }
}
