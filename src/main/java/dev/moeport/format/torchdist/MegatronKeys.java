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
 *   <li>optimizer state, rng state, modules' {@code _extra_state}, Megatron's common state and other
 *       ShardedObjects are skipped, labelled for what they hold.</li>
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
        if (isExtraState(key)) {
            // Saved as a tensor only by Transformer Engine; as bytes, its content tells (objectLabel).
            return bytes ? "extra state" : "Transformer Engine extra state";
        }
        if (key.equals(COMMON_STATE)) {
            return "Megatron common state";
        }
        if (key.contains("/shard_")) {
            return "ShardedObject";
        }
        return bytes ? "pickled object" : null;
    }

    /** Megatron-Core's (2026) common state: a ShardedObject in the checkpoint, no {@code common.pt}. */
    static final String COMMON_STATE = "common_state/shard_0_1";

    /**
     * Globals a ShardedObject may use beyond plain data, dtypes and tensors (kept as names; nothing is
     * called): Transformer Engine's older extra state is an {@code io.BytesIO}; Model Optimizer's quantizer
     * state records each buffer's {@code torch.Size} (quantization/nn/modules/tensor_quantizer.py,
     * _get_pytorch_state_metadata).
     */
    static final java.util.Set<Pickle.Global> OBJECT_GLOBALS = java.util.Set.of(new Pickle.Global("_io", "BytesIO"),
            new Pickle.Global("torch", "Size"));

    private static boolean isExtraState(String key) {
        return key.contains("._extra_state") || key.startsWith("_extra_state");
    }

    /** Whether a skipped bytes entry's content tells what it is: a module's extra state. */
    static boolean isLabelledByContent(String key) {
        return isExtraState(key);
    }

    /** A ShardedObject's key without its shard suffix: {@code <key>/shard_<offsets>_<shape>} -> {@code <key>}. */
    static String objectKey(String key) {
        int shard = key.indexOf("/shard_");
        return shard < 0 ? key : key.substring(0, shard);
    }

    /**
     * What a module's extra state holds (Megatron saves every module's {@code _extra_state} as a
     * ShardedObject, megatron/core/transformer/utils.py make_sharded_object_for_checkpoint): Megatron's
     * local linears save None (tensor_parallel/layers.py get_extra_state); Model Optimizer's quantized
     * modules a dict of {@code modelopt_*} entries (quantization/plugins/megatron.py
     * quant_module_get_extra_state); Transformer Engine modules a tensor or BytesIO of their FP8 metadata.
     */
    static String objectLabel(String key, Object content) {
        if (content == null) {
            return skipReason(key, true);
        }
        if (content == Pickle.NONE) {
            return "local linear extra state (empty)";
        }
        if (content instanceof Pickle.Dict d && d.keys().stream().anyMatch(k -> k instanceof String s && s.startsWith("modelopt_"))) {
            return "Model Optimizer quantizer state";
        }
        return "Transformer Engine extra state";
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

    /** Everything of a routed experts' linear: its weights and Model Optimizer's quantizer state. */
    private static final Pattern EXPERT_LINEAR = Pattern.compile("(.*\\.mlp\\.experts)\\.(linear_fc\\d\\..+)");

    /**
     * A routed experts' key with Megatron's doubled {@code experts.experts.}: the form its checkpoints key
     * every entry of TEGroupedMLP's linears, weights and quantizer {@code _amax} alike
     * (megatron/core/transformer/moe/experts.py, sharded_state_dict: replace_prefix_for_sharding).
     */
    static String doubled(String name) {
        Matcher m = EXPERT_LINEAR.matcher(name);
        return m.matches() ? m.group(1) + ".experts." + m.group(2) : name;
    }

    /** {@code key} with Megatron's doubled {@code experts.experts.} folded into one. */
    static String undoubled(String key) {
        return DOUBLED_EXPERTS.matcher(key).replaceAll("$1experts.");
    }
}
