package dev.moeport.arch;

import static dev.moeport.arch.LayerKind.ATTENTION;
import static dev.moeport.arch.LayerKind.GATED_DELTA_NET;
import static dev.moeport.arch.LayerKind.MLP;
import static dev.moeport.arch.LayerKind.MOE;

import com.fasterxml.jackson.databind.JsonNode;
import dev.moeport.MoeportException;
import java.util.ArrayList;
import java.util.EnumSet;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.function.IntPredicate;

/**
 * The attention + MoE decoders: those of {@code shared/spec/ARCHITECTURES.md} (Qwen3-MoE, Mixtral, DeepSeek-V3
 * and GPT-OSS), OLMoE, MiniMax-M2, GLM-4.5, ERNIE 4.5, Llama 4, and the hybrids of Gated DeltaNet and attention
 * Qwen3-Next and Qwen3.5. Each is a rule table; they differ in names, in which layers are dense or linear attention,
 * and in a few transforms (fused experts, regrouped projections, a zero-centered norm).
 */
final class MoeTransformers {
    private MoeTransformers() {}

    private static final String MCORE_LAYER = "decoder.layers.{L}.";
    private static final String HF_LAYER = "model.layers.{L}.";

    // Dimensions of TensorShape that most rows share.
    private static final String H = "hidden_size";
    private static final String VOCAB = "vocab_size, hidden_size";
    private static final String Q = "num_attention_heads*head_dim";
    private static final String KV = "num_key_value_heads*head_dim";

    /** Embeddings, final norm and output layer, shared by all four. */
    private static List<Rule> modelLevel() {
        return List.of(
                Rule.of(null, "embedding.word_embeddings.weight", "model.embed_tokens.weight").with(new Transform.Vocab()).shape(VOCAB),
                Rule.of(null, "decoder.final_layernorm.weight", "model.norm.weight").shape(H),
                Rule.of(null, "output_layer.weight", "lm_head.weight").with(new Transform.Vocab()).optional().shape(VOCAB));
    }

    /** The pre-norm and fused QKV of GQA attention (GQA-merged on the MCore side). */
    private static List<Rule> gqaAttention() {
        return List.of(
                Rule.of(ATTENTION, "self_attention.linear_qkv.layer_norm_weight", "input_layernorm.weight").shape(H),
                Rule.of(ATTENTION, "self_attention.linear_qkv.weight", "self_attn.q_proj.weight, self_attn.k_proj.weight, self_attn.v_proj.weight")
                        .with(new Transform.Qkv()).shape(Q + ", " + H, KV + ", " + H, KV + ", " + H));
    }

    /**
     * Rows of a gated MLP: MCore {@code prefix.linear_fc1/fc2} <-> HF {@code hf.gate_proj/up_proj/down_proj},
     * {@code intermediate} (a dimension of {@link TensorShape}) wide.
     */
    private static List<Rule> gatedMlp(LayerKind kind, String mcore, String hf, String fc1Suffix, String intermediate) {
        return List.of(
                Rule.of(kind, mcore + ".linear_fc1.weight" + fc1Suffix, hf + ".gate_proj.weight, " + hf + ".up_proj.weight")
                        .with(new Transform.Gated()).shape(intermediate + ", " + H),
                Rule.of(kind, mcore + ".linear_fc2.weight" + fc1Suffix, hf + ".down_proj.weight").shape(H + ", " + intermediate));
    }

    private static List<Rule> concat(List<List<Rule>> parts) {
        List<Rule> all = new ArrayList<>();
        parts.forEach(all::addAll);
        return all;
    }

    /** Every layer has attention; layer i has an MoE when {@code moe} says so, else a dense MLP. */
    private static List<Set<LayerKind>> attentionPlus(ModelConfig config, IntPredicate moe) {
        int layers = (int) config.requireInt("num_hidden_layers");
        List<Set<LayerKind>> kinds = new ArrayList<>();
        for (int i = 0; i < layers; i++) {
            kinds.add(EnumSet.of(ATTENTION, moe.test(i) ? MOE : MLP));
        }
        return kinds;
    }

    private static Set<Integer> intSet(JsonNode list) {
        Set<Integer> set = new HashSet<>();
        if (list != null && list.isArray()) {
            list.forEach(n -> set.add(n.asInt()));
        }
        return set;
    }

    /** transformers 5 fuses Mixtral-style experts and names the block {@code mlp} (its "mixtral" conversion pattern). */
    private static final HfFusedLayout BLOCK_SPARSE_FUSED = HfFusedLayout.gated("block_sparse_moe.experts", "w1", "w3", "w2",
            List.of(new HfFusedLayout.Rename(
                    "^(model\\.layers\\.\\d+\\.)mlp\\.", "$1block_sparse_moe.", "^(model\\.layers\\.\\d+\\.)block_sparse_moe\\.", "$1mlp.")));

    static final Architecture QWEN3_MOE = new Architecture(
            "qwen3_moe",
            List.of("Qwen3MoeForCausalLM"),
            MCORE_LAYER,
            HF_LAYER,
            List.of("num_experts", "num_local_experts"),
            config -> {
                Set<Integer> dense = intSet(config.get("mlp_only_layers"));
                long step = config.intOr("decoder_sparse_step", 1);
                long experts = config.has("num_experts") ? config.requireInt("num_experts") : config.intOr("num_local_experts", 0);
                return attentionPlus(config, i -> !dense.contains(i) && experts > 0 && step > 0 && (i + 1) % step == 0);
            },
            concat(List.of(
                    modelLevel(),
                    gqaAttention(),
                    List.of(
                            Rule.of(ATTENTION, "self_attention.q_layernorm.weight", "self_attn.q_norm.weight").shape("head_dim"),
                            Rule.of(ATTENTION, "self_attention.k_layernorm.weight", "self_attn.k_norm.weight").shape("head_dim"),
                            Rule.of(ATTENTION, "self_attention.linear_proj.weight", "self_attn.o_proj.weight").shape(H + ", " + Q),
                            Rule.of(MLP, "mlp.linear_fc1.layer_norm_weight", "post_attention_layernorm.weight").shape(H),
                            Rule.of(MOE, "pre_mlp_layernorm.weight", "post_attention_layernorm.weight").shape(H),
                            Rule.of(MOE, "mlp.router.weight", "mlp.gate.weight").shape("num_experts|num_local_experts, " + H)),
                    gatedMlp(MLP, "mlp", "mlp", "", "intermediate_size"),
                    gatedMlp(MOE, "mlp.experts", "mlp.experts.{e}", "{e}", "moe_intermediate_size"))),
            Architecture.COMMON_EXCLUSIONS,
            HfFusedLayout.gated("mlp.experts", "gate_proj", "up_proj", "down_proj", List.of()));

    static final Architecture MIXTRAL = new Architecture(
            "mixtral",
            List.of("MixtralForCausalLM"),
            MCORE_LAYER,
            HF_LAYER,
            List.of("num_local_experts"),
            config -> attentionPlus(config, i -> true),
            concat(List.of(
                    modelLevel(),
                    gqaAttention(),
                    List.of(
                            Rule.of(ATTENTION, "self_attention.linear_proj.weight", "self_attn.o_proj.weight").shape(H + ", " + Q),
                            Rule.of(MOE, "pre_mlp_layernorm.weight", "post_attention_layernorm.weight").shape(H),
                            Rule.of(MOE, "mlp.router.weight", "block_sparse_moe.gate.weight").shape("num_local_experts, " + H)),
                    blockSparseExperts())),
            Architecture.COMMON_EXCLUSIONS,
            BLOCK_SPARSE_FUSED);

    /** Mixtral-style experts ({@code block_sparse_moe.experts.N.w1/w3/w2}), {@code intermediate_size} wide. */
    private static List<Rule> blockSparseExperts() {
        return List.of(
                Rule.of(MOE, "mlp.experts.linear_fc1.weight{e}", "block_sparse_moe.experts.{e}.w1.weight, block_sparse_moe.experts.{e}.w3.weight")
                        .with(new Transform.Gated()).shape("intermediate_size, " + H),
                Rule.of(MOE, "mlp.experts.linear_fc2.weight{e}", "block_sparse_moe.experts.{e}.w2.weight").shape(H + ", intermediate_size"));
    }


    /** MLA's query rows: per head, the part without rotary embedding and the rotary part. */
    private static final String MLA_Q = "num_attention_heads*qk_nope_head_dim + num_attention_heads*qk_rope_head_dim";

    /** DeepSeek-style layers: the first {@code first_k_dense_replace} dense, then an MoE every {@code moe_layer_freq} layers. */
    private static List<Set<LayerKind>> firstLayersDense(ModelConfig config) {
        long firstMoe = config.intOr("first_k_dense_replace", 0);
        long frequency = config.intOr("moe_layer_freq", 1);
        return attentionPlus(config, i -> i >= firstMoe && frequency > 0 && i % frequency == 0);
    }

    /** DeepSeek-style feed-forward rows: dense MLPs, and MoEs with a biased router and shared experts. */
    private static List<Rule> deepSeekMlp() {
        return concat(List.of(
                List.of(
                        // Dense layers fuse the post-attention norm into fc1; MoE layers keep it apart.
                        Rule.of(MLP, "mlp.linear_fc1.layer_norm_weight", "post_attention_layernorm.weight").shape(H),
                        Rule.of(MOE, "pre_mlp_layernorm.weight", "post_attention_layernorm.weight").shape(H),
                        Rule.of(MOE, "mlp.router.weight", "mlp.gate.weight").shape("n_routed_experts, " + H),
                        Rule.of(MOE, "mlp.router.expert_bias", "mlp.gate.e_score_correction_bias").keepDtype().shape("n_routed_experts")),
                gatedMlp(MLP, "mlp", "mlp", "", "intermediate_size"),
                gatedMlp(MOE, "mlp.experts", "mlp.experts.{e}", "{e}", "moe_intermediate_size"),
                gatedMlp(MOE, "mlp.shared_experts", "mlp.shared_experts", "", "n_shared_experts*moe_intermediate_size")));
    }

    static final Architecture DEEPSEEK_V3 = new Architecture(
            "deepseek_v3",
            List.of("DeepseekV3ForCausalLM"),
            MCORE_LAYER,
            HF_LAYER,
            List.of("n_routed_experts"),
            MoeTransformers::firstLayersDense,
            concat(List.of(
                    modelLevel(),
                    List.of(
                            // MLA: the input norm stays apart; the q and kv low-rank norms are fused into the up projections.
                            Rule.of(ATTENTION, "input_layernorm.weight", "input_layernorm.weight").shape(H),
                            Rule.of(ATTENTION, "self_attention.linear_q_down_proj.weight", "self_attn.q_a_proj.weight").optional()
                                    .shape("q_lora_rank, " + H),
                            Rule.of(ATTENTION, "self_attention.linear_q_up_proj.layer_norm_weight", "self_attn.q_a_layernorm.weight").optional()
                                    .shape("q_lora_rank"),
                            Rule.of(ATTENTION, "self_attention.linear_q_up_proj.weight", "self_attn.q_b_proj.weight").optional()
                                    .shape(MLA_Q + ", q_lora_rank"),
                            Rule.of(ATTENTION, "self_attention.linear_q_proj.weight", "self_attn.q_proj.weight").optional().shape(MLA_Q + ", " + H),
                            Rule.of(ATTENTION, "self_attention.linear_kv_down_proj.weight", "self_attn.kv_a_proj_with_mqa.weight")
                                    .shape("kv_lora_rank + qk_rope_head_dim, " + H),
                            Rule.of(ATTENTION, "self_attention.linear_kv_up_proj.layer_norm_weight", "self_attn.kv_a_layernorm.weight").shape("kv_lora_rank"),
                            Rule.of(ATTENTION, "self_attention.linear_kv_up_proj.weight", "self_attn.kv_b_proj.weight")
                                    .shape("num_attention_heads*qk_nope_head_dim + num_attention_heads*v_head_dim, kv_lora_rank"),
                            Rule.of(ATTENTION, "self_attention.linear_proj.weight", "self_attn.o_proj.weight").shape(H + ", num_attention_heads*v_head_dim")),
                    deepSeekMlp())),
            Architecture.COMMON_EXCLUSIONS,
            HfFusedLayout.gated("mlp.experts", "gate_proj", "up_proj", "down_proj", List.of()))
            .withMtp(deepSeekMtp());

    /**
     * DeepSeek-V3's multi-token-prediction layers (Kimi-K2's and GLM-4.5's too), as Megatron-Bridge maps them
     * (src/megatron/bridge/models/deepseek/common.py, the MTP mappings): the MTP layer's transformer layer holds
     * the rows of a MoE layer, and its own tensors are the embedding and hidden-state norms, their projection and
     * the final norm (HF's shared_head.norm). HF's copies of the embedding and output head in the MTP layer
     * ({@code embed_tokens}, {@code shared_head.head}) have no Megatron-Core tensor: Megatron shares the model's.
     */
    private static Architecture.Mtp deepSeekMtp() {
        return new Architecture.Mtp("num_nextn_predict_layers", config -> List.of(EnumSet.of(ATTENTION, MOE)), HF_LAYER, true, false, List.of(
                Rule.of(null, "enorm.weight", "model.layers.{first}.enorm.weight").shape(H),
                Rule.of(null, "hnorm.weight", "model.layers.{first}.hnorm.weight").shape(H),
                Rule.of(null, "eh_proj.weight", "model.layers.{first}.eh_proj.weight").shape(H + ", 2*" + H),
                Rule.of(null, "final_layernorm.weight", "model.layers.{first}.shared_head.norm.weight").shape(H)));
    }

    static final Architecture GPT_OSS = new Architecture(
            "gpt_oss",
            List.of("GptOssForCausalLM"),
            MCORE_LAYER,
            HF_LAYER,
            List.of("num_local_experts"),
            config -> attentionPlus(config, i -> true),
            concat(List.of(
                    modelLevel(),
                    gqaAttention(),
                    List.of(
                            Rule.of(ATTENTION, "self_attention.linear_qkv.bias", "self_attn.q_proj.bias, self_attn.k_proj.bias, self_attn.v_proj.bias")
                                    .with(new Transform.Qkv()).shape(Q, KV, KV),
                            Rule.of(ATTENTION, "self_attention.linear_proj.weight", "self_attn.o_proj.weight").shape(H + ", " + Q),
                            Rule.of(ATTENTION, "self_attention.linear_proj.bias", "self_attn.o_proj.bias").shape(H),
                            Rule.of(ATTENTION, "self_attention.core_attention.softmax_offset", "self_attn.sinks").shape("num_attention_heads"),
                            Rule.of(MOE, "pre_mlp_layernorm.weight", "post_attention_layernorm.weight").shape(H),
                            Rule.of(MOE, "mlp.router.weight", "mlp.router.weight").shape("num_local_experts, " + H),
                            Rule.of(MOE, "mlp.router.bias", "mlp.router.bias").shape("num_local_experts"),
                            // Fused experts: the shape of the HF tensor holding all of them.
                            Rule.of(MOE, "mlp.experts.linear_fc1.weight{e}", "mlp.experts.gate_up_proj").with(new Transform.InterleavedExperts(2))
                                    .shape("num_local_experts, " + H + ", 2*intermediate_size"),
                            Rule.of(MOE, "mlp.experts.linear_fc1.bias{e}", "mlp.experts.gate_up_proj_bias").with(new Transform.InterleavedExperts(2))
                                    .shape("num_local_experts, 2*intermediate_size"),
                            Rule.of(MOE, "mlp.experts.linear_fc2.weight{e}", "mlp.experts.down_proj").with(new Transform.InterleavedExperts(1))
                                    .shape("num_local_experts, intermediate_size, " + H),
                            Rule.of(MOE, "mlp.experts.linear_fc2.bias{e}", "mlp.experts.down_proj_bias").with(new Transform.InterleavedExperts(1))
                                    .shape("num_local_experts, " + H)))),
            Architecture.COMMON_EXCLUSIONS,
            HfFusedLayout.NONE);
    /**
     * OLMoE: Qwen3-MoE's rows, but its q/k norms span all heads ({@code [heads x head_dim]}; Megatron-Bridge's
     * {@code OLMoESelfAttention} builds them that wide), every layer is an MoE, and the experts are
     * {@code intermediate_size} wide.
     */
    static final Architecture OLMOE = new Architecture(
            "olmoe",
            List.of("OlmoeForCausalLM"),
            MCORE_LAYER,
            HF_LAYER,
            List.of("num_experts"),
            config -> attentionPlus(config, i -> true),
            concat(List.of(
                    modelLevel(),
                    gqaAttention(),
                    fullWidthQkNorm(),
                    List.of(
                            Rule.of(ATTENTION, "self_attention.linear_proj.weight", "self_attn.o_proj.weight").shape(H + ", " + Q),
                            Rule.of(MOE, "pre_mlp_layernorm.weight", "post_attention_layernorm.weight").shape(H),
                            Rule.of(MOE, "mlp.router.weight", "mlp.gate.weight").shape("num_experts, " + H)),
                    gatedMlp(MOE, "mlp.experts", "mlp.experts.{e}", "{e}", "intermediate_size"))),
            Architecture.COMMON_EXCLUSIONS,
            HfFusedLayout.gated("mlp.experts", "gate_proj", "up_proj", "down_proj", List.of()));

    /**
     * MiniMax-M2: Mixtral's experts and names, q/k norms over all heads as OLMoE's, and a sigmoid router
     * with an expert bias (Megatron-Bridge {@code minimax_m2_bridge.py}).
     */
    static final Architecture MINIMAX_M2 = new Architecture(
            "minimax_m2",
            List.of("MiniMaxM2ForCausalLM"),
            MCORE_LAYER,
            HF_LAYER,
            List.of("num_local_experts"),
            config -> attentionPlus(config, i -> true),
            concat(List.of(
                    modelLevel(),
                    gqaAttention(),
                    fullWidthQkNorm(),
                    List.of(
                            Rule.of(ATTENTION, "self_attention.linear_proj.weight", "self_attn.o_proj.weight").shape(H + ", " + Q),
                            Rule.of(MOE, "pre_mlp_layernorm.weight", "post_attention_layernorm.weight").shape(H),
                            Rule.of(MOE, "mlp.router.weight", "block_sparse_moe.gate.weight").shape("num_local_experts, " + H),
                            Rule.of(MOE, "mlp.router.expert_bias", "block_sparse_moe.e_score_correction_bias").keepDtype().shape("num_local_experts")),
                    blockSparseExperts())),
            Architecture.COMMON_EXCLUSIONS,
            BLOCK_SPARSE_FUSED);

    /** q/k RMSNorms over the whole projection (all heads), not per head. */
    private static List<Rule> fullWidthQkNorm() {
        return List.of(
                Rule.of(ATTENTION, "self_attention.q_layernorm.weight", "self_attn.q_norm.weight").shape(Q),
                Rule.of(ATTENTION, "self_attention.k_layernorm.weight", "self_attn.k_norm.weight").shape(KV));
    }
    /**
     * GLM-4.5 / GLM-4.6 (Glm4MoeForCausalLM): DeepSeek-V3's dense-first layers, biased router and shared experts
     * around GQA attention with a q/k/v bias and, where {@code use_qk_norm}, per-head q/k norms (Megatron-Bridge
     * {@code glm/glm45_bridge.py}). Partial rotary changes no tensor.
     */
    static final Architecture GLM4_MOE = new Architecture(
            "glm4_moe",
            List.of("Glm4MoeForCausalLM"),
            MCORE_LAYER,
            HF_LAYER,
            List.of("n_routed_experts"),
            MoeTransformers::firstLayersDense,
            concat(List.of(
                    modelLevel(),
                    gqaAttention(),
                    List.of(
                            Rule.of(ATTENTION, "self_attention.linear_qkv.bias", "self_attn.q_proj.bias, self_attn.k_proj.bias, self_attn.v_proj.bias")
                                    .with(new Transform.Qkv()).optional().shape(Q, KV, KV),
                            Rule.of(ATTENTION, "self_attention.q_layernorm.weight", "self_attn.q_norm.weight").optional().shape("head_dim"),
                            Rule.of(ATTENTION, "self_attention.k_layernorm.weight", "self_attn.k_norm.weight").optional().shape("head_dim"),
                            Rule.of(ATTENTION, "self_attention.linear_proj.weight", "self_attn.o_proj.weight").shape(H + ", " + Q)),
                    deepSeekMlp())),
            Architecture.COMMON_EXCLUSIONS,
            HfFusedLayout.gated("mlp.experts", "gate_proj", "up_proj", "down_proj", List.of()))
            // GLM-4.5's MTP layers map as DeepSeek-V3's (Megatron-Bridge glm/glm45_bridge.py, its MTP mappings).
            .withMtp(deepSeekMtp());

    /**
     * ERNIE 4.5 MoE (Ernie4_5_MoeForCausalLM): GQA attention, dense layers outside
     * {@code moe_layer_start_index..moe_layer_end_index} (every {@code moe_layer_interval}-th), shared experts, and
     * the expert bias stored {@code [1, experts]} (Megatron-Bridge {@code ernie/ernie_45_bridge.py}, its
     * {@code _SqueezeBiasMapping}).
     */
    static final Architecture ERNIE4_5_MOE = new Architecture(
            "ernie4_5_moe",
            List.of("Ernie4_5_MoeForCausalLM"),
            MCORE_LAYER,
            HF_LAYER,
            List.of("moe_num_experts"),
            config -> {
                long last = config.get("moe_layer_end_index") == null ? -1 : config.get("moe_layer_end_index").asLong(-1);
                long end = last < 0 ? config.requireInt("num_hidden_layers") - 1 : last;
                long start = config.intOr("moe_layer_start_index", 0);
                long interval = config.intOr("moe_layer_interval", 1);
                return attentionPlus(config, i -> interval > 0 && (i + 1) % interval == 0 && i >= start && i <= end);
            },
            concat(List.of(
                    modelLevel(),
                    gqaAttention(),
                    List.of(
                            Rule.of(ATTENTION, "self_attention.linear_proj.weight", "self_attn.o_proj.weight").shape(H + ", " + Q),
                            Rule.of(MLP, "mlp.linear_fc1.layer_norm_weight", "post_attention_layernorm.weight").shape(H),
                            Rule.of(MOE, "pre_mlp_layernorm.weight", "post_attention_layernorm.weight").shape(H),
                            Rule.of(MOE, "mlp.router.weight", "mlp.gate.weight").shape("moe_num_experts, " + H),
                            Rule.of(MOE, "mlp.router.expert_bias", "mlp.moe_statics.e_score_correction_bias").with(new Transform.LeadingOne())
                                    .keepDtype().shape("1, moe_num_experts")),
                    gatedMlp(MLP, "mlp", "mlp", "", "intermediate_size"),
                    gatedMlp(MOE, "mlp.experts", "mlp.experts.{e}", "{e}", "moe_intermediate_size"),
                    gatedMlp(MOE, "mlp.shared_experts", "mlp.shared_experts", "", "moe_num_shared_experts*moe_intermediate_size"))),
            Architecture.COMMON_EXCLUSIONS,
            // transformers' ernie4_5_moe pattern: qwen2_moe's, and the bias moved under mlp.gate.
            HfFusedLayout.gated("mlp.experts", "gate_proj", "up_proj", "down_proj", List.of(new HfFusedLayout.Rename(
                    "^(model\\.layers\\.\\d+\\.)mlp\\.gate\\.moe_statics\\.", "$1mlp.moe_statics.",
                    "^(model\\.layers\\.\\d+\\.)mlp\\.moe_statics\\.", "$1mlp.gate.moe_statics."))));

    /** Every layer attention or Gated DeltaNet, from {@code layer_types} (transformers 5) or {@code full_attention_interval}. */
    private static List<Set<LayerKind>> hybridQwen(ModelConfig config) {
        int layers = (int) config.requireInt("num_hidden_layers");
        JsonNode types = config.get("layer_types");
        long interval = config.intOr("full_attention_interval", 4);
        Set<Integer> dense = intSet(config.get("mlp_only_layers"));
        long step = config.intOr("decoder_sparse_step", 1);
        List<Set<LayerKind>> kinds = new ArrayList<>();
        for (int i = 0; i < layers; i++) {
            String type = types != null && types.isArray() && i < types.size() ? types.get(i).asText()
                    : (i + 1) % interval == 0 ? "full_attention" : "linear_attention";
            LayerKind mixer = switch (type) {
                case "linear_attention" -> GATED_DELTA_NET;
                case "full_attention" -> ATTENTION;
                default -> throw new MoeportException(config.file() + ": layer_types has '" + type + "'; expected linear_attention or full_attention");
            };
            boolean moe = !dense.contains(i) && step > 0 && (i + 1) % step == 0;
            kinds.add(EnumSet.of(mixer, moe ? MOE : MLP));
        }
        return kinds;
    }

    // Gated DeltaNet sizes: q and k heads share linear_num_key_heads, v heads (and the output gate z, b and a) linear_num_value_heads.
    private static final String GDN_QK = "linear_num_key_heads*linear_key_head_dim";
    private static final String GDN_V = "linear_num_value_heads*linear_value_head_dim";
    private static final String GDN_ROWS = "q k: " + GDN_QK + "; v z: " + GDN_V + "; b a: linear_num_value_heads";

    /**
     * Megatron-Core's GatedDeltaNet (megatron/core/ssm/gated_delta_net/) as Megatron-Bridge maps Qwen3-Next's and
     * Qwen3.5's {@code linear_attn} (qwen/qwen3_next_bridge.py, qwen/qwen35_bridge.py): {@code in_proj} holds q, k, v, z,
     * b, a whole, one after the other (param_mapping.py merge_gdn_linear_weights at TP 1); the conv1d's channels are q,
     * k, v in both; the output norm is zero-centered in Megatron-Core only. {@code inProj} is the HF side of in_proj.
     * Megatron-Core's torch_dist holds in_proj and conv1d by section (gated_delta_net/gdn.py in_proj_split_names,
     * common.py sharded_state_dict).
     */
    private static List<Rule> gatedDeltaNet(Rule inProj) {
        return List.of(
                Rule.of(GATED_DELTA_NET, "self_attention.in_proj.layer_norm_weight", "input_layernorm.weight").shape(H),
                inProj.torchDistSplit("query key: " + GDN_QK + "; value z: " + GDN_V + "; beta alpha: linear_num_value_heads"),
                Rule.of(GATED_DELTA_NET, "self_attention.conv1d.weight", "linear_attn.conv1d.weight")
                        .shape("2*" + GDN_QK + " + " + GDN_V + ", 1, linear_conv_kernel_dim")
                        .torchDistSplit("query key: " + GDN_QK + "; value: " + GDN_V),
                Rule.of(GATED_DELTA_NET, "self_attention.A_log", "linear_attn.A_log").keepDtype().shape("linear_num_value_heads"),
                Rule.of(GATED_DELTA_NET, "self_attention.dt_bias", "linear_attn.dt_bias").keepDtype().shape("linear_num_value_heads"),
                Rule.of(GATED_DELTA_NET, "self_attention.out_norm.weight", "linear_attn.norm.weight").with(new Transform.ZeroCentered())
                        .shape("linear_value_head_dim"),
                Rule.of(GATED_DELTA_NET, "self_attention.out_proj.weight", "linear_attn.out_proj.weight").shape(H + ", " + GDN_V));
    }

    /**
     * Attention with an output gate ({@code attention_output_gate}): HF's q_proj gives each head its query then its gate;
     * Megatron-Core's linear_qkv holds, per KV group, the group's queries, their gates, then k and v
     * (Megatron-Bridge param_mapping.py merge_qkv_weights), with per-head q/k norms.
     */
    private static List<Rule> gatedAttention() {
        return List.of(
                Rule.of(ATTENTION, "self_attention.linear_qkv.layer_norm_weight", "input_layernorm.weight").shape(H),
                Rule.of(ATTENTION, "self_attention.linear_qkv.weight", "self_attn.q_proj.weight, self_attn.k_proj.weight, self_attn.v_proj.weight")
                        .with(Transform.Regroup.of("q gate k v / num_key_value_heads", "q gate / num_attention_heads, k, v",
                                "q gate: " + Q + "; k v: " + KV))
                        .shape("2*" + Q + ", " + H, KV + ", " + H, KV + ", " + H),
                Rule.of(ATTENTION, "self_attention.q_layernorm.weight", "self_attn.q_norm.weight").shape("head_dim"),
                Rule.of(ATTENTION, "self_attention.k_layernorm.weight", "self_attn.k_norm.weight").shape("head_dim"),
                Rule.of(ATTENTION, "self_attention.linear_proj.weight", "self_attn.o_proj.weight").shape(H + ", " + Q));
    }

    /** Qwen3-Next's and Qwen3.5's MoE rows: Qwen3-MoE's, plus one shared expert behind a sigmoid gate. */
    private static List<Rule> qwenSharedExpertMoe() {
        return concat(List.of(
                List.of(
                        Rule.of(MOE, "pre_mlp_layernorm.weight", "post_attention_layernorm.weight").shape(H),
                        Rule.of(MOE, "mlp.router.weight", "mlp.gate.weight").shape("num_experts, " + H),
                        Rule.of(MOE, "mlp.shared_experts.gate_weight", "mlp.shared_expert_gate.weight").shape("1, " + H)),
                gatedMlp(MOE, "mlp.experts", "mlp.experts.{e}", "{e}", "moe_intermediate_size"),
                gatedMlp(MOE, "mlp.shared_experts", "mlp.shared_expert", "", "shared_expert_intermediate_size")));
    }

    /**
     * Qwen3-Next's and Qwen3.5's MTP layer as Megatron-Bridge maps it (qwen/qwen3_next_bridge.py, the MTP mappings;
     * qwen/qwen35_bridge.py, _get_moe_mtp_mappings): HF's {@code mtp.layers.0.} is a gated-attention and MoE layer, and
     * {@code mtp.fc}, {@code mtp.pre_fc_norm_embedding}, {@code mtp.pre_fc_norm_hidden}, {@code mtp.norm} the MTP layer's
     * own (one MTP layer: their names carry no number).
     */
    private static Architecture.Mtp qwenMtp() {
        return new Architecture.Mtp("mtp_num_hidden_layers", config -> List.of(EnumSet.of(ATTENTION, MOE)), "mtp.layers.{L}.", false, false, List.of(
                Rule.of(null, "enorm.weight", "mtp.pre_fc_norm_embedding.weight").shape(H),
                Rule.of(null, "hnorm.weight", "mtp.pre_fc_norm_hidden.weight").shape(H),
                Rule.of(null, "eh_proj.weight", "mtp.fc.weight").shape(H + ", 2*" + H),
                Rule.of(null, "final_layernorm.weight", "mtp.norm.weight").shape(H)));
    }

    /** The shared expert's gate is a router in all but name: one row of logits. */
    private static final List<String> QWEN_HYBRID_EXCLUSIONS = java.util.stream.Stream.concat(Architecture.COMMON_EXCLUSIONS.stream(),
            java.util.stream.Stream.of("*.shared_expert_gate")).toList();

    /**
     * Qwen3-Next (Qwen3NextForCausalLM): Gated DeltaNet and gated attention layers, each with an MoE with one shared
     * expert (Megatron-Bridge {@code qwen/qwen3_next_bridge.py}). Its in_proj_qkvz and in_proj_ba group q, k, v, z and
     * b, a by key head.
     */
    static final Architecture QWEN3_NEXT = new Architecture(
            "qwen3_next",
            List.of("Qwen3NextForCausalLM"),
            MCORE_LAYER,
            HF_LAYER,
            List.of("num_experts"),
            MoeTransformers::hybridQwen,
            concat(List.of(
                    modelLevel(),
                    gatedDeltaNet(Rule.of(GATED_DELTA_NET, "self_attention.in_proj.weight", "linear_attn.in_proj_qkvz.weight, linear_attn.in_proj_ba.weight")
                            .with(Transform.Regroup.of("q k v z b a", "q k v z / linear_num_key_heads, b a / linear_num_key_heads", GDN_ROWS))
                            .shape("2*" + GDN_QK + " + 2*" + GDN_V + ", " + H, "2*linear_num_value_heads, " + H)),
                    gatedAttention(),
                    // Dense layers (mlp_only_layers), as Qwen3-MoE's.
                    List.of(Rule.of(MLP, "mlp.linear_fc1.layer_norm_weight", "post_attention_layernorm.weight").shape(H)),
                    gatedMlp(MLP, "mlp", "mlp", "", "intermediate_size"),
                    qwenSharedExpertMoe())),
            QWEN_HYBRID_EXCLUSIONS,
            HfFusedLayout.gated("mlp.experts", "gate_proj", "up_proj", "down_proj", List.of()))
            .withMtp(qwenMtp());

    /**
     * Qwen3.5 MoE (Qwen3_5MoeForCausalLM): Qwen3-Next's layers with in_proj kept as four tensors, q/k/v flat
     * (Megatron-Bridge {@code qwen/qwen35_bridge.py}, GDNLinearMappingSeparate); the published checkpoints fuse the
     * experts as {@code gate_up_proj}.
     */
    static final Architecture QWEN3_5_MOE = new Architecture(
            "qwen3_5_moe",
            List.of("Qwen3_5MoeForCausalLM"),
            MCORE_LAYER,
            HF_LAYER,
            List.of("num_experts"),
            MoeTransformers::hybridQwen,
            concat(List.of(
                    modelLevel(),
                    gatedDeltaNet(Rule.of(GATED_DELTA_NET, "self_attention.in_proj.weight",
                                    "linear_attn.in_proj_qkv.weight, linear_attn.in_proj_z.weight, linear_attn.in_proj_b.weight, linear_attn.in_proj_a.weight")
                            .with(Transform.Regroup.of("q k v z b a", "q k v, z, b, a", GDN_ROWS))
                            .shape("2*" + GDN_QK + " + " + GDN_V + ", " + H, GDN_V + ", " + H, "linear_num_value_heads, " + H,
                                    "linear_num_value_heads, " + H)),
                    gatedAttention(),
                    qwenSharedExpertMoe())),
            QWEN_HYBRID_EXCLUSIONS,
            HfFusedLayout.gated("mlp.experts", "gate_proj", "up_proj", "down_proj", List.of()))
            .withMtp(qwenMtp());

    /**
     * Llama 4 (Llama4ForCausalLM, the text model): GQA attention (its q/k norms have no weights), MoE layers from
     * {@code moe_layers} (else every {@code interleave_moe_layer_step}-th) with a shared expert, and routed experts only
     * as fused, transposed tensors: {@code gate_up_proj [E, H, 2I]} with gate columns first and {@code down_proj [E, I, H]}.
     * Megatron-Bridge has no Llama 4 bridge; the names are Model Optimizer's (modelopt/torch/export/plugins/mcore_llama.py,
     * llama4_causal_lm_export: stacked experts transposed), its dense layers Megatron-Core's MLP.
     */
    static final Architecture LLAMA4 = new Architecture(
            "llama4",
            List.of("Llama4ForCausalLM"),
            MCORE_LAYER,
            HF_LAYER,
            List.of("num_local_experts"),
            config -> {
                long step = config.intOr("interleave_moe_layer_step", 1);
                Set<Integer> moe = intSet(config.get("moe_layers"));
                return attentionPlus(config, i -> config.has("moe_layers") ? moe.contains(i) : step > 0 && (i + 1) % step == 0);
            },
            concat(List.of(
                    modelLevel(),
                    gqaAttention(),
                    List.of(
                            Rule.of(ATTENTION, "self_attention.linear_proj.weight", "self_attn.o_proj.weight").shape(H + ", " + Q),
                            Rule.of(MLP, "mlp.linear_fc1.layer_norm_weight", "post_attention_layernorm.weight").shape(H),
                            Rule.of(MOE, "pre_mlp_layernorm.weight", "post_attention_layernorm.weight").shape(H),
                            Rule.of(MOE, "mlp.router.weight", "feed_forward.router.weight").shape("num_local_experts, " + H),
                            // A plain transpose of each expert (split 1): [gate ; up] rows become gate then up columns.
                            Rule.of(MOE, "mlp.experts.linear_fc1.weight{e}", "feed_forward.experts.gate_up_proj").with(new Transform.InterleavedExperts(1))
                                    .shape("num_local_experts, " + H + ", 2*intermediate_size"),
                            Rule.of(MOE, "mlp.experts.linear_fc2.weight{e}", "feed_forward.experts.down_proj").with(new Transform.InterleavedExperts(1))
                                    .shape("num_local_experts, intermediate_size, " + H)),
                    gatedMlp(MLP, "mlp", "feed_forward", "", "intermediate_size_mlp"),
                    gatedMlp(MOE, "mlp.shared_experts", "feed_forward.shared_expert", "", "intermediate_size"))),
            Architecture.COMMON_EXCLUSIONS,
            HfFusedLayout.NONE);

    /**
     * Llama 4 as published (Llama4ForConditionalGeneration, transformers' models/llama4/modeling_llama4.py): the text
     * model is its {@code language_model} module, a Llama4ForCausalLM ({@code language_model.model.*},
     * {@code language_model.lm_head}), beside {@code vision_model} and {@code multi_modal_projector}; config.json nests
     * the text model's under {@code text_config}.
     */
    static final Architecture LLAMA4_MULTIMODAL = LLAMA4.wrappedBy(new Wrapper("Llama4ForConditionalGeneration", "text_config",
            List.of(new Wrapper.Prefix("", "language_model.")), List.of("vision_model.", "multi_modal_projector.")));

    /**
     * Qwen3.5 MoE as published (Qwen3_5MoeForConditionalGeneration, models/qwen3_5_moe/modeling_qwen3_5_moe.py): its
     * Qwen3_5MoeModel holds the text model as {@code model.language_model} and the vision tower as {@code model.visual};
     * {@code lm_head} and the MTP layers ({@code mtp.*}) stay at the top, as in the text model (Megatron-Bridge
     * qwen_vl/qwen35_vl_bridge.py: HF {@code model.language_model.} for the language model, {@code lm_head.weight} and
     * {@code mtp.*} unprefixed).
     */
    static final Architecture QWEN3_5_MOE_MULTIMODAL = QWEN3_5_MOE.wrappedBy(new Wrapper("Qwen3_5MoeForConditionalGeneration", "text_config",
            List.of(new Wrapper.Prefix("model.", "model.language_model.")), List.of("model.visual.")));
}
