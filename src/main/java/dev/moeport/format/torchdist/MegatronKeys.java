package dev.moeport.format.torchdist;

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

    /** {@code key} with Megatron's doubled {@code experts.experts.} folded into one. */
    static String undoubled(String key) {
        return DOUBLED_EXPERTS.matcher(key).replaceAll("$1experts.");
    }
}
