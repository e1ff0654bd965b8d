package dev.moeport.arch;

import static dev.moeport.testing.TestCheckpoints.assertSameTensors;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.moeport.cli.CliRun;
import dev.moeport.format.Checkpoint;
import dev.moeport.format.Checkpoints;
import java.io.ByteArrayOutputStream;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.ValueLayout;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Kimi-K2 goes through the DeepSeek-V3 rows: its config.json names DeepseekV3ForCausalLM (model_type kimi_k2) with
 * Kimi-K2-Instruct's keys and its structure (384 routed experts, one shared, the first layer dense, one expert group,
 * q LoRA, no MTP layers), sizes scaled down. The HF tensors, named here as DeepSeek-V3's modeling code names them,
 * hold random bf16 bits.
 */
class KimiK2Test {
    @TempDir
    Path tmp;

    private static final int HIDDEN = 64;
    private static final int HEADS = 8;
    private static final int EXPERTS = 384;
    private static final int Q_LORA = 24;
    private static final int KV_LORA = 32;
    private static final int NOPE = 16;
    private static final int ROPE = 8;
    private static final int V_HEAD = 16;
    private static final int EXPERT_SIZE = 16;
    private static final int DENSE_SIZE = 96;
    private static final int VOCAB = 160;

    private Path kimiK2() throws IOException {
        Path dir = Files.createDirectories(tmp.resolve("kimi-k2"));
        ObjectMapper json = new ObjectMapper();
        ObjectNode config = json.createObjectNode();
        config.putArray("architectures").add("DeepseekV3ForCausalLM");
        config.put("model_type", "kimi_k2");
        config.put("hidden_size", HIDDEN).put("intermediate_size", DENSE_SIZE).put("moe_intermediate_size", EXPERT_SIZE);
        config.put("num_hidden_layers", 2).put("first_k_dense_replace", 1).put("moe_layer_freq", 1);
        config.put("n_routed_experts", EXPERTS).put("n_shared_experts", 1).put("num_experts_per_tok", 8);
        config.put("n_group", 1).put("topk_group", 1).put("routed_scaling_factor", 2.827).put("scoring_func", "sigmoid").put("topk_method", "noaux_tc");
        config.put("num_attention_heads", HEADS).put("num_key_value_heads", HEADS);
        config.put("q_lora_rank", Q_LORA).put("kv_lora_rank", KV_LORA);
        config.put("qk_nope_head_dim", NOPE).put("qk_rope_head_dim", ROPE).put("v_head_dim", V_HEAD);
        config.put("vocab_size", VOCAB).put("tie_word_embeddings", false).put("num_nextn_predict_layers", 0).put("torch_dtype", "bfloat16");
        json.writeValue(dir.resolve("config.json").toFile(), config);

        Map<String, int[]> tensors = new LinkedHashMap<>();
        tensors.put("model.embed_tokens.weight", new int[] {VOCAB, HIDDEN});
        tensors.put("model.norm.weight", new int[] {HIDDEN});
        tensors.put("lm_head.weight", new int[] {VOCAB, HIDDEN});
        for (int layer = 0; layer < 2; layer++) {
            String p = "model.layers." + layer + ".";
            tensors.put(p + "input_layernorm.weight", new int[] {HIDDEN});
            tensors.put(p + "post_attention_layernorm.weight", new int[] {HIDDEN});
            tensors.put(p + "self_attn.q_a_proj.weight", new int[] {Q_LORA, HIDDEN});
            tensors.put(p + "self_attn.q_a_layernorm.weight", new int[] {Q_LORA});
            tensors.put(p + "self_attn.q_b_proj.weight", new int[] {HEADS * (NOPE + ROPE), Q_LORA});
            tensors.put(p + "self_attn.kv_a_proj_with_mqa.weight", new int[] {KV_LORA + ROPE, HIDDEN});
            tensors.put(p + "self_attn.kv_a_layernorm.weight", new int[] {KV_LORA});
            tensors.put(p + "self_attn.kv_b_proj.weight", new int[] {HEADS * (NOPE + V_HEAD), KV_LORA});
            tensors.put(p + "self_attn.o_proj.weight", new int[] {HIDDEN, HEADS * V_HEAD});
            if (layer == 0) {
                for (String proj : List.of("gate_proj", "up_proj")) {
                    tensors.put(p + "mlp." + proj + ".weight", new int[] {DENSE_SIZE, HIDDEN});
                }
                tensors.put(p + "mlp.down_proj.weight", new int[] {HIDDEN, DENSE_SIZE});
                continue;
            }
            tensors.put(p + "mlp.gate.weight", new int[] {EXPERTS, HIDDEN});
            tensors.put(p + "mlp.gate.e_score_correction_bias", new int[] {EXPERTS});
            for (String expert : List.of("shared_experts.", "experts.")) {
                for (int e = 0; e < (expert.equals("experts.") ? EXPERTS : 1); e++) {
                    String q = p + "mlp." + expert + (expert.equals("experts.") ? e + "." : "");
                    tensors.put(q + "gate_proj.weight", new int[] {EXPERT_SIZE, HIDDEN});
                    tensors.put(q + "up_proj.weight", new int[] {EXPERT_SIZE, HIDDEN});
                    tensors.put(q + "down_proj.weight", new int[] {HIDDEN, EXPERT_SIZE});
                }
            }
        }
        writeBf16(dir.resolve("model.safetensors"), tensors, new Random(7));
        return dir;
    }

    /** One safetensors file of random bf16 tensors. */
    private static void writeBf16(Path file, Map<String, int[]> tensors, Random random) throws IOException {
        StringBuilder header = new StringBuilder("{");
        long offset = 0;
        for (var t : tensors.entrySet()) {
            long bytes = 2;
            for (int d : t.getValue()) {
                bytes *= d;
            }
            header.append(header.length() > 1 ? "," : "").append('"').append(t.getKey()).append("\":{\"dtype\":\"BF16\",\"shape\":")
                    .append(java.util.Arrays.toString(t.getValue()).replace(" ", "")).append(",\"data_offsets\":[").append(offset).append(',')
                    .append(offset + bytes).append("]}");
            offset += bytes;
        }
        header.append('}');
        while ((header.length() + 8) % 8 != 0) {
            header.append(' ');
        }
        byte[] h = header.toString().getBytes(StandardCharsets.UTF_8);
        byte[] data = new byte[(int) offset];
        for (int i = 0; i < data.length; i += 2) {
            // Finite values only: a random exponent below the all-ones one.
            data[i] = (byte) random.nextInt(256);
            data[i + 1] = (byte) (random.nextInt(2) << 7 | random.nextInt(0x7f));
        }
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        out.writeBytes(ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN).putLong(h.length).array());
        out.writeBytes(h);
        out.writeBytes(data);
        Files.write(file, out.toByteArray());
    }

    private static byte[] bytes(Checkpoint c, String name) {
        try (Arena arena = Arena.ofConfined()) {
            return c.tensor(name).bytes(arena).toArray(ValueLayout.JAVA_BYTE);
        }
    }

    @Test
    void kimiK2RoundTripsThroughTheDeepSeekRowsInEveryLayout() throws IOException {
        Path hf = kimiK2();
        for (String layout : List.of("te", "sequential", "stacked")) {
            Path mcore = CliRun.succeeding("import", "--ckpt-format", "safetensors", "--in", hf.toString(), "--out", tmp.resolve("m-" + layout).toString(),
                    "--experts", layout);
            Path back = CliRun.succeeding("export", "--in", mcore.toString(), "--hf-config", hf.toString(), "--out", tmp.resolve("hf-" + layout).toString());
            assertSameTensors(hf, back);
        }
        // Megatron-Core's side built here (DeepSeek-V3 bridge names): expert 383's fc1 is [gate ; up], MLA's projections are copied.
        try (Checkpoint h = Checkpoints.open(hf); Checkpoint m = Checkpoints.open(tmp.resolve("m-te"))) {
            ByteArrayOutputStream fc1 = new ByteArrayOutputStream();
            fc1.writeBytes(bytes(h, "model.layers.1.mlp.experts.383.gate_proj.weight"));
            fc1.writeBytes(bytes(h, "model.layers.1.mlp.experts.383.up_proj.weight"));
            assertArrayEquals(fc1.toByteArray(), bytes(m, "decoder.layers.1.mlp.experts.linear_fc1.weight383"));
            assertArrayEquals(bytes(h, "model.layers.1.self_attn.kv_b_proj.weight"), bytes(m, "decoder.layers.1.self_attention.linear_kv_up_proj.weight"));
            assertArrayEquals(bytes(h, "model.layers.0.self_attn.q_a_layernorm.weight"),
                    bytes(m, "decoder.layers.0.self_attention.linear_q_up_proj.layer_norm_weight"));
        }
        // A config that says 256 experts (DeepSeek-V3's count) contradicts Kimi-K2's router.
        ObjectMapper json = new ObjectMapper();
        ObjectNode config = (ObjectNode) json.readTree(hf.resolve("config.json").toFile());
        config.put("n_routed_experts", 256);
        Path wrong = Files.createDirectories(tmp.resolve("wrong"));
        json.writeValue(wrong.resolve("config.json").toFile(), config);
        CliRun r = CliRun.of("export", "--in", tmp.resolve("m-te").toString(), "--hf-config", wrong.toString(), "--out", tmp.resolve("x").toString());
        assertEquals(1, r.code());
        assertTrue(r.err().contains("has shape [384, 64] but") && r.err().contains("implies [256, 64] (n_routed_experts = 256)"), r.err());
    }
}
