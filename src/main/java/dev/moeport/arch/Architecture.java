package dev.moeport.arch;

import java.util.List;
import java.util.Set;
import java.util.function.Function;

/**
 * A model family's mapping: its rule table, how its config names layers and experts, and the modules
 * that stay unquantized by default. Adding an architecture is adding one of these: a table, not code.
 *
 * @param name the name users type ({@code nemotron_h})
 * @param hfClasses the {@code architectures} entries of config.json that select it
 * @param mcoreLayer the MCore layer prefix, with {@code {L}}
 * @param hfLayer the HF layer prefix, with {@code {L}}
 * @param expertCountKeys config keys for the number of routed experts, first present wins
 * @param layers the kinds each decoder layer holds, from the config
 * @param rules the mapping table
 * @param defaultExclusions HF module globs kept unquantized unless the user says otherwise
 * @param hfFused how transformers 5 names the same tensors with fused experts
 * @param mtp its multi-token-prediction layers, or null for none
 * @param wrapper the multimodal class whose language model this is ({@link #wrappedBy}), or null for a text model
 */
public record Architecture(String name, List<String> hfClasses, String mcoreLayer, String hfLayer,
                           List<String> expertCountKeys, Function<ModelConfig, List<Set<LayerKind>>> layers,
                           List<Rule> rules, List<String> defaultExclusions, HfFusedLayout hfFused, Mtp mtp, Wrapper wrapper) {

    public Architecture(String name, List<String> hfClasses, String mcoreLayer, String hfLayer, List<String> expertCountKeys,
                        Function<ModelConfig, List<Set<LayerKind>>> layers, List<Rule> rules, List<String> defaultExclusions,
                        HfFusedLayout hfFused) {
        this(name, hfClasses, mcoreLayer, hfLayer, expertCountKeys, layers, rules, defaultExclusions, hfFused, null, null);
    }

    /**
     * Multi-token-prediction layers, after the decoder's. MTP layer {@code m} is a block of inner layers (one for
     * DeepSeek-V3 and Qwen3-Next; NemotronH's from its MTP pattern) holding the decoder rows of their kinds, under
     * Megatron-Core's {@code mtp.layers.<m>.mtp_model_layer.} (or, {@code nested}, {@code ...mtp_model_layer.layers.<i>.}),
     * and HF's {@code hfLayer}. {@code rows} are its own tensors (norms of the embedding and hidden state, their
     * projection, the final norm), under {@code mtp.layers.<m>.}. transformers drops these weights when it saves, so a
     * folder without them is no error.
     *
     * @param countKey the config key for the number of MTP layers
     * @param block the kinds of one MTP layer's inner layers
     * @param hfLayer HF prefix of an inner layer, {@code {L}} its number: {@code num_hidden_layers} (when {@code
     *     afterDecoder}) + m x block size + i
     * @param rows MCore names relative to {@code mtp.layers.<m>.}, HF names whole, {@code {first}} and {@code {last}}
     *     standing for the numbers of the block's first and last inner layer
     */
    public record Mtp(String countKey, Function<ModelConfig, List<Set<LayerKind>>> block, String hfLayer, boolean afterDecoder, boolean nested,
                      List<Rule> rows) {
        public static String mcorePrefix(int m) {
            return "mtp.layers." + m + ".";
        }

        /** Megatron-Core's prefix of inner layer {@code i} of MTP layer {@code m}. */
        public String mcoreLayerPrefix(int m, int i) {
            return mcorePrefix(m) + "mtp_model_layer." + (nested ? "layers." + i + "." : "");
        }

        /** The HF number of inner layer {@code i} of MTP layer {@code m}. */
        public int hfLayerNumber(ModelConfig config, int blockSize, int m, int i) {
            return (afterDecoder ? (int) config.requireInt("num_hidden_layers") : 0) + m * blockSize + i;
        }
    }

    /** This architecture with MTP layers. */
    public Architecture withMtp(Mtp mtp) {
        return new Architecture(name, hfClasses, mcoreLayer, hfLayer, expertCountKeys, layers, rules, defaultExclusions, hfFused, mtp, wrapper);
    }

    /**
     * This text model as the language model of {@code wrapper}: the same rows under the wrapper's HF names, read with
     * the config nested in the wrapper's, and the vision tower's tensors kept unquantized. The layer rows' names are
     * relative to {@link #hfLayer}, so only the prefixes, the model-level rows and the MTP rows change.
     */
    public Architecture wrappedBy(Wrapper wrapper) {
        if (!hfFused.renames().isEmpty()) {
            throw new IllegalArgumentException(name + ": a wrapper of a layout with renames would need them rewritten too");
        }
        List<Rule> wrappedRules = rules.stream().map(r -> r.kind() != null ? r : r.withHf(r.hf().stream().map(wrapper::wrap).toList())).toList();
        Mtp wrappedMtp = mtp == null ? null : new Mtp(mtp.countKey(), mtp.block(), wrapper.wrap(mtp.hfLayer()), mtp.afterDecoder(), mtp.nested(),
                mtp.rows().stream().map(r -> r.withHf(r.hf().stream().map(wrapper::wrap).toList())).toList());
        List<String> exclusions = new java.util.ArrayList<>(defaultExclusions.stream().map(wrapper::wrapGlob).toList());
        wrapper.carried().forEach(p -> exclusions.add(p + "*"));
        return new Architecture(name, List.of(wrapper.hfClass()), mcoreLayer, wrapper.wrap(hfLayer), expertCountKeys, layers, wrappedRules,
                List.copyOf(exclusions), hfFused, wrappedMtp, wrapper);
    }

    /** The config the rows read: a wrapper's nested text config, else {@code config} itself. */
    public ModelConfig textConfig(ModelConfig config) {
        return wrapper == null ? config : config.nested(wrapper.configKey(), wrapper.hfClass());
    }

    /** Whether {@code name} is a tensor of the wrapper outside the language model (its vision tower, projector). */
    public boolean carries(String name) {
        return wrapper != null && wrapper.carries(name);
    }

    /**
     * Modules every architecture keeps unquantized: embeddings, the output layer, routers (their tiny
     * logits decide which experts run) and Mamba's depthwise conv1d.
     */
    public static final List<String> COMMON_EXCLUSIONS = List.of(
            "*embeddings", "*embed_tokens", "*word_embeddings", "lm_head", "*output_layer", "*.gate", "*.router", "*.conv1d");

    /**
     * The modules kept unquantized unless the user says otherwise: {@link #defaultExclusions}, and every MTP layer,
     * which Model Optimizer keeps in BF16 and lists as {@code <layer>*} (modelopt/torch/export/unified_export_hf.py,
     * {@code _add_mtp_exclusions}).
     */
    public List<String> quantizationExclusions(ModelConfig config) {
        if (mtp == null || config == null) {
            return defaultExclusions;
        }
        List<String> all = new java.util.ArrayList<>(defaultExclusions);
        long count = config.intOr(mtp.countKey(), 0);
        if (count > 0 && !mtp.afterDecoder()) {
            // MTP weights outside the decoder's layers (mtp.fc, mtp.layers.N): Model Optimizer lists their top module too
            // (examples/hf_ptq/example_utils.py, _keys_to_prefixes).
            all.add(mtp.hfLayer().substring(0, mtp.hfLayer().indexOf('.')) + "*");
        }
        int block = count > 0 ? mtp.block().apply(config).size() : 0;
        for (int m = 0; m < count; m++) {
            for (int i = 0; i < block; i++) {
                all.add(mtp.hfLayer().replace("{L}", Integer.toString(mtp.hfLayerNumber(config, block, m, i))) + "*");
            }
        }
        return List.copyOf(all);
    }

    public long expertCount(ModelConfig config) {
        return config.requireIntOf(expertCountKeys.toArray(String[]::new));
    }
}
