package dev.moeport.synth;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.moeport.MoeportException;
import dev.moeport.convert.McoreLayout;
import dev.moeport.plan.Job;
import dev.moeport.plan.OutputTensor;
import dev.moeport.tensor.DType;
import dev.moeport.tensor.Shape;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;

/**
 * Synthetic NemotronH checkpoints: the Megatron-Core tensors of a model of given dimensions, filled
 * with deterministic pseudo-random BF16 values, and the matching Hugging Face config.json. For demos,
 * tests and benchmarks of any size, written as a plan the executor streams.
 */
public final class NemotronHSynth {

    /** How the routed experts are stored. */

    /** Model dimensions; {@code pattern} is the hybrid_override_pattern (M Mamba, * attention, - MLP, E MoE). */
    public record Dims(String pattern, int hidden, int heads, int kvHeads, int headDim, int mambaHeads, int mambaHeadDim,
                       int mambaGroups, int ssmState, int convKernel, int intermediate, int experts, int expertSize,
                       int sharedExpertSize, int vocab) {

        public Dims {
            if (!pattern.matches("[M*\\-E]+")) {
                throw new MoeportException("layer pattern '" + pattern + "' may only hold M (Mamba), * (attention), - (MLP) and E (MoE)");
            }
            int[] sizes = {hidden, heads, kvHeads, headDim, mambaHeads, mambaHeadDim, mambaGroups, ssmState, convKernel, intermediate, experts,
                expertSize, sharedExpertSize, vocab};
            if (java.util.Arrays.stream(sizes).anyMatch(n -> n < 1)) {
                throw new MoeportException("every size of a synthetic model must be at least 1 (hidden " + hidden + ", experts " + experts
                        + ", expert size " + expertSize + ", vocab " + vocab + ")");
            }
            if (heads % kvHeads != 0) {
                throw new MoeportException("heads (" + heads + ") must be a multiple of kv heads (" + kvHeads + ")");
            }
        }

        public Dims withPattern(String p) {
            return new Dims(p, hidden, heads, kvHeads, headDim, mambaHeads, mambaHeadDim, mambaGroups, ssmState, convKernel, intermediate,
                    experts, expertSize, sharedExpertSize, vocab);
        }

        public Dims with(Integer newHidden, Integer newExperts, Integer newExpertSize, Integer newVocab) {
            return new Dims(pattern, newHidden != null ? newHidden : hidden, heads, kvHeads, headDim, mambaHeads, mambaHeadDim, mambaGroups,
                    ssmState, convKernel, intermediate, newExperts != null ? newExperts : experts,
                    newExpertSize != null ? newExpertSize : expertSize, sharedExpertSize, newVocab != null ? newVocab : vocab);
        }

        int mambaInner() {
            return mambaHeads * mambaHeadDim;
        }

        int convDim() {
            return mambaInner() + 2 * mambaGroups * ssmState;
        }
    }

    /** Named sizes: the fixture's, a few hundred MB, and one of each layer kind at Nemotron-3 30B-A3B scale. */
    public enum Preset {
        TINY(new Dims("M*EM-E", 256, 4, 2, 64, 8, 64, 2, 16, 4, 512, 8, 128, 128, 1024)),
        SMALL(new Dims("M*EM-EM*E", 1024, 8, 2, 128, 16, 64, 2, 64, 4, 2048, 16, 512, 1024, 32000)),
        THIRTY_B_LAYER(new Dims("M*E", 2688, 32, 2, 128, 64, 64, 8, 128, 4, 1856 * 2, 128, 1856, 3712, 131072));

        public final Dims dims;

        Preset(Dims dims) {
            this.dims = dims;
        }

        public String cliName() {
            return this == THIRTY_B_LAYER ? "30b-layer" : name().toLowerCase(Locale.ROOT);
        }

        public static Preset fromCliName(String name) {
            for (Preset p : values()) {
                if (p.cliName().equals(name)) {
                    return p;
                }
            }
            throw new IllegalArgumentException("unknown preset '" + name + "' (tiny, small, 30b-layer)");
        }
    }

    private NemotronHSynth() {}

    /** The jobs that write every MCore tensor of a model of {@code dims}. */
    public static List<Job> mcoreJobs(Dims d, McoreLayout.Experts layout, long seed) {
        List<Job> jobs = new ArrayList<>();
        Gen g = new Gen(jobs, seed);
        g.weight("embedding.word_embeddings.weight", d.vocab, d.hidden);
        g.norm("decoder.final_norm.weight", d.hidden);
        g.weight("output_layer.weight", d.vocab, d.hidden);
        for (int i = 0; i < d.pattern.length(); i++) {
            String p = "decoder.layers." + i + ".";
            switch (d.pattern.charAt(i)) {
                case 'M' -> {
                    g.norm(p + "mixer.in_proj.layer_norm_weight", d.hidden);
                    g.weight(p + "mixer.in_proj.weight", 2L * d.mambaInner() + 2L * d.mambaGroups * d.ssmState + d.mambaHeads, d.hidden);
                    g.weight(p + "mixer.conv1d.weight", d.convDim(), 1, d.convKernel);
                    g.values(p + "mixer.conv1d.bias", DType.BF16, -0.05f, 0.05f, d.convDim());
                    g.values(p + "mixer.A_log", DType.BF16, 0f, 2.7f, d.mambaHeads);
                    g.norm(p + "mixer.D", d.mambaHeads);
                    g.values(p + "mixer.dt_bias", DType.BF16, -4.6f, -2.3f, d.mambaHeads);
                    g.norm(p + "mixer.norm.weight", d.mambaInner());
                    g.weight(p + "mixer.out_proj.weight", d.hidden, d.mambaInner());
                }
                case '*' -> {
                    g.norm(p + "self_attention.linear_qkv.layer_norm_weight", d.hidden);
                    g.weight(p + "self_attention.linear_qkv.weight", (long) (d.heads + 2 * d.kvHeads) * d.headDim, d.hidden);
                    g.weight(p + "self_attention.linear_proj.weight", d.hidden, (long) d.heads * d.headDim);
                }
                case '-' -> {
                    g.norm(p + "mlp.linear_fc1.layer_norm_weight", d.hidden);
                    g.weight(p + "mlp.linear_fc1.weight", d.intermediate, d.hidden);
                    g.weight(p + "mlp.linear_fc2.weight", d.hidden, d.intermediate);
                }
                case 'E' -> {
                    g.norm(p + "pre_mlp_layernorm.weight", d.hidden);
                    g.weight(p + "mlp.router.weight", d.experts, d.hidden);
                    g.values(p + "mlp.router.expert_bias", DType.F32, -0.01f, 0.01f, d.experts);
                    g.weight(p + "mlp.shared_experts.linear_fc1.weight", d.sharedExpertSize, d.hidden);
                    g.weight(p + "mlp.shared_experts.linear_fc2.weight", d.hidden, d.sharedExpertSize);
                    for (String fc : List.of("linear_fc1", "linear_fc2")) {
                        long rows = fc.equals("linear_fc1") ? d.expertSize : d.hidden;
                        long cols = fc.equals("linear_fc1") ? d.hidden : d.expertSize;
                        // Seeded by the TEGroupedMLP name whatever the layout, so all layouts hold the same values.
                        String grouped = p + "mlp.experts." + fc + ".weight";
                        List<Long> seeds = new ArrayList<>();
                        for (int e = 0; e < d.experts; e++) {
                            String name = switch (layout) {
                                case TE_GROUPED -> grouped + e;
                                case SEQUENTIAL -> p + "mlp.experts.local_experts." + e + "." + fc + ".weight";
                                case STACKED -> null;
                            };
                            if (name != null) {
                                g.seeded(name, List.of(g.seedOf(grouped + e)), rows, cols);
                            }
                            seeds.add(g.seedOf(grouped + e));
                        }
                        if (layout == McoreLayout.Experts.STACKED) {
                            g.seeded(grouped, seeds, d.experts, rows, cols);
                        }
                    }
                }
                default -> throw new IllegalStateException();
            }
        }
        return jobs;
    }

    /** The Hugging Face config.json of a model of {@code dims}, as transformers 5 writes a NemotronH config. */
    public static ObjectNode hfConfig(Dims d) {
        ObjectNode c = new ObjectMapper().createObjectNode();
        c.putArray("architectures").add("NemotronHForCausalLM");
        c.put("model_type", "nemotron_h");
        c.put("dtype", "bfloat16");
        c.put("hidden_size", d.hidden);
        c.put("num_hidden_layers", d.pattern.length());
        ArrayNode kinds = c.putArray("layers_block_type");
        for (char k : d.pattern.toCharArray()) {
            kinds.add(switch (k) {
                case 'M' -> "mamba";
                case '*' -> "attention";
                case '-' -> "mlp";
                default -> "moe";
            });
        }
        c.put("num_attention_heads", d.heads);
        c.put("num_key_value_heads", d.kvHeads);
        c.put("head_dim", d.headDim);
        c.put("mamba_num_heads", d.mambaHeads);
        c.put("mamba_head_dim", d.mambaHeadDim);
        c.put("n_groups", d.mambaGroups);
        c.put("ssm_state_size", d.ssmState);
        c.put("conv_kernel", d.convKernel);
        c.put("expand", 2);
        c.put("use_conv_bias", true);
        c.put("mamba_proj_bias", false);
        c.put("intermediate_size", d.intermediate);
        c.put("mlp_hidden_act", "relu2");
        c.put("n_routed_experts", d.experts);
        c.put("n_shared_experts", 1);
        c.put("num_experts_per_tok", Math.min(2, d.experts));
        c.put("moe_intermediate_size", d.expertSize);
        c.put("moe_shared_expert_intermediate_size", d.sharedExpertSize);
        c.put("norm_topk_prob", true);
        c.put("routed_scaling_factor", 1.0);
        c.put("n_group", 1);
        c.put("topk_group", 1);
        c.put("vocab_size", d.vocab);
        c.put("tie_word_embeddings", false);
        c.put("layer_norm_epsilon", 1e-5);
        c.put("max_position_embeddings", 4096);
        c.put("attention_bias", false);
        c.put("mlp_bias", false);
        c.put("use_bias", false);
        return c;
    }

    /** Appends synthesis jobs, each tensor seeded from the run's seed and its name. */
    private record Gen(List<Job> jobs, long seed) {
        void weight(String name, long... shape) {
            values(name, DType.BF16, -0.05f, 0.05f, shape);
        }

        void norm(String name, long size) {
            values(name, DType.BF16, 0.9f, 1.1f, size);
        }

        void values(String name, DType dtype, float low, float high, long... shape) {
            jobs.add(new Job.Synthesize(new OutputTensor(name, dtype, Shape.of(shape)), List.of(seedOf(name)), low, high));
        }

        void seeded(String name, List<Long> seeds, long... shape) {
            jobs.add(new Job.Synthesize(new OutputTensor(name, DType.BF16, Shape.of(shape)), seeds, -0.05f, 0.05f));
        }

        long seedOf(String name) {
            return seed * 0x9E3779B97F4A7C15L + name.hashCode();
        }
    }
}
