package dev.moeport.convert;

import dev.moeport.tensor.Tensor;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.SequencedMap;
import java.util.Set;
import java.util.function.UnaryOperator;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * The names Megatron-Core's layer specs give a layer's norms, as a table. The rule tables use the
 * Transformer Engine spec's names (pre-norms fused into the next linear: {@code linear_qkv.layer_norm_weight},
 * a dense MLP's {@code linear_fc1.layer_norm_weight}; a MoE layer's {@code pre_mlp_layernorm.weight}; with MLA,
 * {@code linear_q_up_proj.layer_norm_weight} and {@code linear_kv_up_proj.layer_norm_weight}). The local spec
 * (Megatron-Core modules only) keeps norms as modules; its sharded state dict maps
 * {@code input_layernorm.} to {@code self_attention.linear_qkv.layer_norm_} and {@code pre_mlp_layernorm.} to
 * {@code mlp.linear_fc1.layer_norm_} in every layer, MoE layers too (gpt_layer_specs.py,
 * {@code sharded_state_dict_keys_map}), and with MLA, which has no key map, keeps {@code q_layernorm},
 * {@code kv_layernorm} and {@code pre_mlp_layernorm}. A plain {@code state_dict()} holds the module names.
 */
public enum MegatronSpec {
    TRANSFORMER_ENGINE,
    LOCAL;

    private static final Pattern LAYER = Pattern.compile("(decoder\\.layers\\.\\d+\\.)(.*)");

    /** One row: the Transformer Engine name and the local spec's, in layers of a kind. */
    private record Row(Kind kind, String te, String local) {}

    private enum Kind { PLAIN_MOE, PLAIN_DENSE, PLAIN, MLA, MLA_DENSE }

    /** Local names as the sharded state dict writes them (and plain state-dict module names, read only). */
    private static final List<Row> ROWS = List.of(
            new Row(Kind.PLAIN_MOE, "pre_mlp_layernorm.weight", "mlp.linear_fc1.layer_norm_weight"),
            new Row(Kind.MLA, "self_attention.linear_q_up_proj.layer_norm_weight", "self_attention.q_layernorm.weight"),
            new Row(Kind.MLA, "self_attention.linear_kv_up_proj.layer_norm_weight", "self_attention.kv_layernorm.weight"),
            new Row(Kind.MLA_DENSE, "mlp.linear_fc1.layer_norm_weight", "pre_mlp_layernorm.weight"));

    /** A plain {@code state_dict()} of the local spec: the modules' own names. */
    private static final List<Row> PLAIN_STATE_DICT = List.of(
            new Row(Kind.PLAIN, "self_attention.linear_qkv.layer_norm_weight", "input_layernorm.weight"),
            new Row(Kind.PLAIN_DENSE, "mlp.linear_fc1.layer_norm_weight", "pre_mlp_layernorm.weight"));

    /** What a layer is, from the names it holds. */
    private static Set<Kind> kinds(Set<String> layerNames) {
        boolean mla = layerNames.stream().anyMatch(n -> n.startsWith("self_attention.linear_kv_"));
        boolean dense = layerNames.contains("mlp.linear_fc1.weight");
        boolean attention = layerNames.stream().anyMatch(n -> n.startsWith("self_attention.") || n.startsWith("input_layernorm."));
        if (mla) {
            return dense ? Set.of(Kind.MLA, Kind.MLA_DENSE) : Set.of(Kind.MLA);
        }
        if (!attention) {
            return Set.of(); // a layer of a hybrid model (Mamba, MLP or MoE alone) keeps its names
        }
        return dense ? Set.of(Kind.PLAIN, Kind.PLAIN_DENSE) : Set.of(Kind.PLAIN, Kind.PLAIN_MOE);
    }

    private static Map<String, Set<String>> layers(Iterable<String> names) {
        Map<String, Set<String>> layers = new LinkedHashMap<>();
        for (String n : names) {
            Matcher m = LAYER.matcher(n);
            if (m.matches()) {
                layers.computeIfAbsent(m.group(1), k -> new java.util.HashSet<>()).add(m.group(2));
            }
        }
        return layers;
    }

    /** Some Megatron-Core versions call an MTP layer's transformer layer {@code transformer_layer}. */
    private static final Pattern MTP_TRANSFORMER_LAYER = Pattern.compile("(mtp\\.layers\\.\\d+\\.)transformer_layer\\.");

    /** {@code tensors} under the Transformer Engine names the rule tables use, whichever spec wrote them. */
    public static SequencedMap<String, Tensor> toTransformerEngineNames(SequencedMap<String, Tensor> tensors) {
        Map<String, Set<String>> layers = layers(tensors.keySet());
        Map<String, Set<Kind>> layerKinds = new java.util.HashMap<>();
        List<Row> rows = concat(ROWS, PLAIN_STATE_DICT);
        SequencedMap<String, Tensor> out = new LinkedHashMap<>();
        tensors.forEach((original, t) -> {
            String name = MTP_TRANSFORMER_LAYER.matcher(original).replaceFirst("$1mtp_model_layer.");
            Matcher m = LAYER.matcher(name);
            String renamed = name;
            if (m.matches()) {
                Set<String> held = layers.get(m.group(1));
                Set<Kind> kinds = layerKinds.computeIfAbsent(m.group(1), layer -> kinds(held));
                for (Row row : rows) {
                    if (kinds.contains(row.kind()) && row.local().equals(m.group(2)) && !held.contains(row.te())) {
                        renamed = m.group(1) + row.te();
                    }
                }
            }
            out.put(renamed, t);
        });
        return out;
    }

    /** The name this spec's checkpoints give a tensor the rule tables call {@code teName}, given all of them. */
    public UnaryOperator<String> namer(Set<String> teNames) {
        if (this == TRANSFORMER_ENGINE) {
            return UnaryOperator.identity();
        }
        Map<String, Set<String>> layers = layers(teNames);
        return name -> {
            Matcher m = LAYER.matcher(name);
            if (!m.matches()) {
                return name;
            }
            Set<Kind> kinds = kinds(layers.get(m.group(1)));
            for (Row row : ROWS) {
                if (kinds.contains(row.kind()) && row.te().equals(m.group(2))) {
                    return m.group(1) + row.local();
                }
            }
            return name;
        };
    }

    private static List<Row> concat(List<Row> a, List<Row> b) {
        return java.util.stream.Stream.concat(a.stream(), b.stream()).toList();
    }
}
