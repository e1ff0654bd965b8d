package dev.moeport.arch;

import static dev.moeport.arch.LayerKind.ATTENTION;
import static dev.moeport.arch.LayerKind.MAMBA;
import static dev.moeport.arch.LayerKind.MLP;
import static dev.moeport.arch.LayerKind.MOE;

import com.fasterxml.jackson.databind.JsonNode;
import dev.moeport.MoeportException;
import java.util.ArrayList;
import java.util.EnumSet;
import java.util.List;
import java.util.Set;

/** NemotronH (hybrid Mamba / attention / MLP / MoE): the table of {@code shared/spec/NEMOTRON_H.md}. */
final class NemotronH {
    private NemotronH() {}

    /** Mamba's inner width (heads x head size) and its B and C rows (groups x state size). */
    private static final String INNER = "mamba_num_heads*mamba_head_dim";
    private static final String GROUPS_STATE = "2*n_groups*ssm_state_size";
    /** How Megatron-Core's MambaMixer saves in_proj and conv1d in torch_dist (ssm/mamba_mixer.py, sharded_state_dict). */
    private static final String IN_PROJ_SECTIONS = "z x: " + INNER + "; B C: n_groups*ssm_state_size; dt: mamba_num_heads";
    private static final String CONV_SECTIONS = "x: " + INNER + "; B C: n_groups*ssm_state_size";
    /** Routed experts work in the latent space when the model has one. */
    private static final String EXPERT_WIDTH = "moe_latent_size|hidden_size";

    static final Architecture ARCHITECTURE = new Architecture(
            "nemotron_h",
            List.of("NemotronHForCausalLM"),
            "decoder.layers.{L}.",
            "backbone.layers.{L}.",
            List.of("n_routed_experts"),
            config -> layers(config, "hybrid_override_pattern", "layers_block_type"),
            List.of(
                    Rule.of(null, "embedding.word_embeddings.weight", "backbone.embeddings.weight").with(new Transform.Vocab()).shape("vocab_size, hidden_size"),
                    Rule.of(null, "decoder.final_norm.weight", "backbone.norm_f.weight").shape("hidden_size"),
                    Rule.of(null, "output_layer.weight", "lm_head.weight").with(new Transform.Vocab()).optional().shape("vocab_size, hidden_size"),

                    Rule.of(MAMBA, "mixer.in_proj.layer_norm_weight | norm.weight", "norm.weight").shape("hidden_size"),
                    Rule.of(MAMBA, "mixer.in_proj.weight", "mixer.in_proj.weight").shape(INNER + " + " + INNER + " + " + GROUPS_STATE + " + mamba_num_heads, hidden_size")
                            .torchDistSplit(IN_PROJ_SECTIONS),
                    Rule.of(MAMBA, "mixer.conv1d.weight", "mixer.conv1d.weight").shape(INNER + " + " + GROUPS_STATE + ", 1, conv_kernel")
                            .torchDistSplit(CONV_SECTIONS),
                    Rule.of(MAMBA, "mixer.conv1d.bias", "mixer.conv1d.bias").shape(INNER + " + " + GROUPS_STATE).torchDistSplit(CONV_SECTIONS),
                    Rule.of(MAMBA, "mixer.A_log", "mixer.A_log").keepDtype().shape("mamba_num_heads"),
                    Rule.of(MAMBA, "mixer.D", "mixer.D").keepDtype().shape("mamba_num_heads"),
                    Rule.of(MAMBA, "mixer.dt_bias", "mixer.dt_bias").keepDtype().shape("mamba_num_heads"),
                    Rule.of(MAMBA, "mixer.norm.weight", "mixer.norm.weight").shape(INNER),
                    Rule.of(MAMBA, "mixer.out_proj.weight", "mixer.out_proj.weight").shape("hidden_size, " + INNER),

                    Rule.of(ATTENTION, "self_attention.linear_qkv.layer_norm_weight", "norm.weight").shape("hidden_size"),
                    Rule.of(ATTENTION, "self_attention.linear_qkv.weight", "mixer.q_proj.weight, mixer.k_proj.weight, mixer.v_proj.weight")
                            .with(new Transform.Qkv())
                            .shape("num_attention_heads*head_dim, hidden_size", "num_key_value_heads*head_dim, hidden_size",
                                    "num_key_value_heads*head_dim, hidden_size"),
                    Rule.of(ATTENTION, "self_attention.linear_proj.weight", "mixer.o_proj.weight").shape("hidden_size, num_attention_heads*head_dim"),

                    Rule.of(MLP, "mlp.linear_fc1.layer_norm_weight", "norm.weight").shape("hidden_size"),
                    Rule.of(MLP, "mlp.linear_fc1.weight", "mixer.up_proj.weight").shape("intermediate_size, hidden_size"),
                    Rule.of(MLP, "mlp.linear_fc2.weight", "mixer.down_proj.weight").shape("hidden_size, intermediate_size"),

                    Rule.of(MOE, "pre_mlp_layernorm.weight", "norm.weight").shape("hidden_size"),
                    Rule.of(MOE, "mlp.router.weight", "mixer.gate.weight").shape("n_routed_experts, hidden_size"),
                    Rule.of(MOE, "mlp.router.expert_bias", "mixer.gate.e_score_correction_bias").keepDtype().optional().shape("n_routed_experts"),
                    Rule.of(MOE, "mlp.shared_experts.linear_fc1.weight", "mixer.shared_experts.up_proj.weight").optional()
                            .shape("moe_shared_expert_intermediate_size, hidden_size"),
                    Rule.of(MOE, "mlp.shared_experts.linear_fc2.weight", "mixer.shared_experts.down_proj.weight").optional()
                            .shape("hidden_size, moe_shared_expert_intermediate_size"),
                    Rule.of(MOE, "mlp.experts.linear_fc1.weight{e}", "mixer.experts.{e}.up_proj.weight")
                            .shape("moe_intermediate_size, " + EXPERT_WIDTH),
                    Rule.of(MOE, "mlp.experts.linear_fc2.weight{e}", "mixer.experts.{e}.down_proj.weight")
                            .shape(EXPERT_WIDTH + ", moe_intermediate_size"),
                    Rule.of(MOE, "mlp.fc1_latent_proj.weight", "mixer.fc1_latent_proj.weight").optional().shape("moe_latent_size, hidden_size"),
                    Rule.of(MOE, "mlp.fc2_latent_proj.weight", "mixer.fc2_latent_proj.weight").optional().shape("hidden_size, moe_latent_size")),
            Architecture.COMMON_EXCLUSIONS,
            new HfFusedLayout(
                    List.of(new HfFusedLayout.Rename("^model\\.", "backbone.", "^backbone\\.", "model.")),
                    List.of(new HfFusedLayout.Experts("mixer.experts.up_proj", List.of("mixer.experts.{e}.up_proj.weight")),
                            new HfFusedLayout.Experts("mixer.experts.down_proj", List.of("mixer.experts.{e}.down_proj.weight")))))
            .withMtp(mtp());

    /**
     * Nemotron 3 Super's MTP layers, as Megatron-Bridge maps them (nemotronh/nemotron_h_bridge.py, mapping_registry, the
     * MTP flattening mappings): an MTP layer is a block of hybrid layers from the MTP pattern, nested in Megatron-Core
     * ({@code mtp.layers.<m>.mtp_model_layer.layers.<i>.}), numbered on in HF ({@code mtp.layers.<m x block + i>.}),
     * with enorm, hnorm and eh_proj on the block's first HF layer and final_layernorm on its last.
     */
    private static Architecture.Mtp mtp() {
        return new Architecture.Mtp("num_nextn_predict_layers", config -> layers(config, "mtp_hybrid_override_pattern", "mtp_layers_block_type"),
                "mtp.layers.{L}.", false, true, List.of(
                        Rule.of(null, "enorm.weight", "mtp.layers.{first}.enorm.weight").shape("hidden_size"),
                        Rule.of(null, "hnorm.weight", "mtp.layers.{first}.hnorm.weight").shape("hidden_size"),
                        Rule.of(null, "eh_proj.weight", "mtp.layers.{first}.eh_proj.weight").shape("hidden_size, 2*hidden_size"),
                        Rule.of(null, "final_layernorm.weight", "mtp.layers.{last}.final_layernorm.weight").shape("hidden_size")));
    }

    /**
     * Layer kinds from a pattern ({@code hybrid_override_pattern}, published checkpoints) or a list of types
     * ({@code layers_block_type}, transformers 5); the MTP block's from {@code mtp_hybrid_override_pattern} or
     * {@code mtp_layers_block_type}.
     */
    private static List<Set<LayerKind>> layers(ModelConfig config, String patternKey, String typesKey) {
        List<Set<LayerKind>> kinds = new ArrayList<>();
        JsonNode pattern = config.get(patternKey);
        JsonNode types = config.get(typesKey);
        if (pattern != null && pattern.isTextual()) {
            for (char c : pattern.textValue().toCharArray()) {
                kinds.add(EnumSet.of(switch (c) {
                    case 'M' -> MAMBA;
                    case '*' -> ATTENTION;
                    case '-' -> MLP;
                    case 'E' -> MOE;
                    default -> throw new MoeportException(config.file() + ": " + patternKey + " has '" + c
                            + "'; expected M (Mamba), * (attention), - (MLP) or E (MoE)");
                }));
            }
        } else if (types != null && types.isArray()) {
            for (JsonNode t : types) {
                kinds.add(EnumSet.of(switch (t.asText()) {
                    case "mamba", "linear_attention" -> MAMBA;
                    case "attention", "full_attention" -> ATTENTION;
                    case "mlp" -> MLP;
                    case "moe" -> MOE;
                    default -> throw new MoeportException(config.file() + ": " + typesKey + " has '" + t.asText()
                            + "'; expected mamba, attention, mlp or moe");
                }));
            }
        } else {
            throw new MoeportException(config.file() + ": a NemotronH config needs " + patternKey + " or " + typesKey);
        }
        return kinds;
    }
}
