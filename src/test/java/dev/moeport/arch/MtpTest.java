package dev.moeport.arch;

import static dev.moeport.testing.TestCheckpoints.assertSameTensors;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import dev.moeport.cli.CliRun;
import dev.moeport.format.Checkpoint;
import dev.moeport.format.Checkpoints;
import dev.moeport.tensor.DType;
import dev.moeport.tensor.Shape;
import dev.moeport.tensor.Tensor;
import dev.moeport.testing.Shared;
import dev.moeport.testing.TestCheckpoints;
import java.lang.foreign.Arena;
import java.lang.foreign.ValueLayout;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * DeepSeek-V3's multi-token-prediction layer. transformers drops it when it saves, so the fixture has none: the test
 * adds one as DeepSeek-V3 publishes it (HF layer num_hidden_layers + m, here 3, a MoE layer with enorm, hnorm,
 * eh_proj and shared_head.norm), and expects Megatron-Core's names as Megatron-Bridge maps them
 * (NVIDIA-NeMo/Megatron-Bridge src/megatron/bridge/models/deepseek/common.py, the MTP mappings: the decoder's rows
 * under mtp.layers.0.mtp_model_layer., enorm/hnorm/eh_proj under mtp.layers.0., shared_head.norm as
 * mtp.layers.0.final_layernorm).
 */
class MtpTest {

    @TempDir
    Path tmp;

    private static byte[] bytes(Checkpoint c, String name) {
        try (Arena arena = Arena.ofConfined()) {
            return c.tensor(name).bytes(arena).toArray(ValueLayout.JAVA_BYTE);
        }
    }

    /** The fixture plus an MTP layer: layer 2's tensors under layer 3 with fresh values, and the MTP layer's own. */
    private Path hfWithMtp(String arch) throws Exception {
        Path fixture = Shared.fixture(arch).resolve("hf");
        int hidden = new com.fasterxml.jackson.databind.ObjectMapper().readTree(fixture.resolve("config.json").toFile()).get("hidden_size").asInt();
        Random random = new Random(61);
        List<TestCheckpoints.Entry> entries = new ArrayList<>();
        try (Checkpoint c = Checkpoints.open(fixture)) {
            for (String name : c.tensors().keySet()) {
                Tensor t = c.tensor(name);
                entries.add(TestCheckpoints.Entry.of(name, TestCheckpoints.bytes(name, t.dtype(), t.shape(), bytes(c, name))));
                if (name.startsWith("model.layers.2.")) {
                    String mtp = "model.layers.3." + name.substring("model.layers.2.".length());
                    entries.add(TestCheckpoints.Entry.of(mtp, TestCheckpoints.bytes(mtp, t.dtype(), t.shape(), randomBf16(random, t))));
                }
            }
        }
        for (String norm : List.of("enorm.weight", "hnorm.weight", "shared_head.norm.weight")) {
            entries.add(entry(random, "model.layers.3." + norm, Shape.of(hidden)));
        }
        entries.add(entry(random, "model.layers.3.eh_proj.weight", Shape.of(hidden, 2L * hidden)));
        Path dir = TestCheckpoints.write(tmp.resolve("hf-" + arch), entries, 2_000_000);
        Files.copy(fixture.resolve("config.json"), dir.resolve("config.json"));
        return dir;
    }

    private static TestCheckpoints.Entry entry(Random random, String name, Shape shape) {
        byte[] b = new byte[(int) shape.numel() * 2];
        fillBf16(random, b);
        return TestCheckpoints.Entry.of(name, TestCheckpoints.bytes(name, DType.BF16, shape, b));
    }

    private static byte[] randomBf16(Random random, Tensor like) {
        byte[] b = new byte[(int) like.dtype().byteSize(like.shape().numel())];
        if (like.dtype() == DType.BF16) {
            fillBf16(random, b);
        } else {
            random.nextBytes(b);
        }
        return b;
    }

    /** Finite BF16 values in [-2, 2): an exponent byte kept small. */
    private static void fillBf16(Random random, byte[] b) {
        for (int i = 0; i < b.length; i += 2) {
            b[i] = (byte) random.nextInt(256);
            b[i + 1] = (byte) ((random.nextBoolean() ? 0x80 : 0) | (0x3C + random.nextInt(4)));
        }
    }

    @Test
    void theMtpLayerMapsAsMegatronBridgeMapsIt() throws Exception {
        Path hf = hfWithMtp("deepseek_v3");
        Path mcore = CliRun.succeeding("import", "--ckpt-format", "safetensors", "--experts", "sequential", "--in", hf.toString(),
                "--out", tmp.resolve("m").toString());
        try (Checkpoint h = Checkpoints.open(hf); Checkpoint m = Checkpoints.open(mcore)) {
            assertArrayEquals(bytes(h, "model.layers.3.enorm.weight"), bytes(m, "mtp.layers.0.enorm.weight"));
            assertArrayEquals(bytes(h, "model.layers.3.hnorm.weight"), bytes(m, "mtp.layers.0.hnorm.weight"));
            assertArrayEquals(bytes(h, "model.layers.3.eh_proj.weight"), bytes(m, "mtp.layers.0.eh_proj.weight"));
            assertArrayEquals(bytes(h, "model.layers.3.shared_head.norm.weight"), bytes(m, "mtp.layers.0.final_layernorm.weight"));
            assertArrayEquals(bytes(h, "model.layers.3.self_attn.kv_a_proj_with_mqa.weight"),
                    bytes(m, "mtp.layers.0.mtp_model_layer.self_attention.linear_kv_down_proj.weight"));
            // A routed expert's fc1 is [gate ; up], as in the decoder's layers.
            byte[] gate = bytes(h, "model.layers.3.mlp.experts.5.gate_proj.weight");
            byte[] up = bytes(h, "model.layers.3.mlp.experts.5.up_proj.weight");
            byte[] fc1 = new byte[gate.length + up.length];
            System.arraycopy(gate, 0, fc1, 0, gate.length);
            System.arraycopy(up, 0, fc1, gate.length, up.length);
            assertArrayEquals(fc1, bytes(m, "mtp.layers.0.mtp_model_layer.mlp.experts.local_experts.5.linear_fc1.weight"));
            assertEquals(DType.F32, m.tensor("mtp.layers.0.mtp_model_layer.mlp.router.expert_bias").dtype());
        }
        Path back = CliRun.succeeding("export", "--in", mcore.toString(), "--hf-config", hf.toString(), "--out", tmp.resolve("back").toString());
        assertSameTensors(hf, back);
        // And through Megatron-LM's own format.
        Path td = CliRun.succeeding("import", "--in", hf.toString(), "--out", tmp.resolve("td").toString());
        assertSameTensors(hf, CliRun.succeeding("export", "--in", td.toString(), "--hf-config", hf.toString(), "--out", tmp.resolve("back2").toString()));
    }

    /**
     * quantize keeps the MTP layer in BF16 and lists it as Model Optimizer 0.47 does: {@code model.layers.3*}
     * (modelopt/torch/export/unified_export_hf.py, _add_mtp_exclusions, the pattern {@code f"{prefix}*"}), beside the
     * routers of the decoder's layers, which keep their names among quantized experts (quant_utils.py,
     * _get_unquantized_moe_router_names and the prefix-wildcard summary).
     */
    @Test
    void quantizeKeepsTheMtpLayerUnquantizedAndExcludesItAsModelOptimizerDoes() throws Exception {
        Path hf = hfWithMtp("deepseek_v3");
        Path q = CliRun.succeeding("quantize", "--format", "nvfp4", "--in", hf.toString(), "--out", tmp.resolve("q").toString());
        try (Checkpoint c = Checkpoints.open(q)) {
            assertEquals(DType.BF16, c.tensor("model.layers.3.mlp.experts.5.gate_proj.weight").dtype());
            assertEquals(DType.BF16, c.tensor("model.layers.3.eh_proj.weight").dtype());
            assertEquals(DType.U8, c.tensor("model.layers.2.mlp.experts.5.gate_proj.weight").dtype());
        }
        com.fasterxml.jackson.databind.JsonNode hfQuant = new com.fasterxml.jackson.databind.ObjectMapper().readTree(q.resolve("hf_quant_config.json").toFile());
        List<String> excluded = new ArrayList<>();
        hfQuant.at("/quantization/exclude_modules").forEach(n -> excluded.add(n.asText()));
        assertEquals(true, excluded.contains("model.layers.3*"), excluded.toString());
        assertEquals(true, excluded.contains("model.layers.2.mlp.gate"), excluded.toString());
        assertEquals(true, excluded.stream().noneMatch(e -> e.startsWith("model.layers.3.")), excluded.toString());
    }

    /**
     * GLM-4.5's MTP layer maps as DeepSeek-V3's (Megatron-Bridge glm/glm45_bridge.py), and a Megatron-Core that calls the
     * MTP layer's transformer layer {@code transformer_layer} (the bridge accepts both names) exports the same.
     */
    @org.junit.jupiter.params.ParameterizedTest
    @org.junit.jupiter.params.provider.ValueSource(strings = {"deepseek_v3", "glm4_moe"})
    void mtpRoundTripsAndReadsEitherLayerName(String arch) throws Exception {
        Path hf = hfWithMtp(arch);
        Path mcore = CliRun.succeeding("import", "--ckpt-format", "safetensors", "--in", hf.toString(), "--out", tmp.resolve("m").toString());
        List<TestCheckpoints.Entry> renamed = new ArrayList<>();
        try (Checkpoint m = Checkpoints.open(mcore)) {
            assertEquals(true, m.contains("mtp.layers.0.eh_proj.weight"));
            for (String name : m.tensors().keySet()) {
                String other = name.replace(".mtp_model_layer.", ".transformer_layer.");
                Tensor t = m.tensor(name);
                renamed.add(TestCheckpoints.Entry.of(other, TestCheckpoints.bytes(other, t.dtype(), t.shape(), bytes(m, name))));
            }
        }
        Path other = TestCheckpoints.write(tmp.resolve("m-transformer-layer"), renamed, Long.MAX_VALUE);
        for (Path in : List.of(mcore, other, CliRun.succeeding("import", "--in", hf.toString(), "--out", tmp.resolve("td").toString()))) {
            assertSameTensors(hf, CliRun.succeeding("export", "--in", in.toString(), "--hf-config", hf.toString(),
                    "--out", tmp.resolve("back-" + in.getFileName()).toString()));
        }
    }

    /**
     * The fixture with MTP tensors as the published mapping names them: the fixture's layers under {@code copies}' new
     * prefixes (fresh values), the MTP layer's own tensors, and the config's MTP count set.
     */
    private Path withMtpTensors(String fixtureName, java.util.Map<String, String> copies, java.util.Map<String, Shape> own, String countKey)
            throws Exception {
        Path fixture = Shared.fixture(fixtureName).resolve("hf");
        Random random = new Random(67);
        List<TestCheckpoints.Entry> entries = new ArrayList<>();
        try (Checkpoint c = Checkpoints.open(fixture)) {
            for (String name : c.tensors().keySet()) {
                Tensor t = c.tensor(name);
                entries.add(TestCheckpoints.Entry.of(name, TestCheckpoints.bytes(name, t.dtype(), t.shape(), bytes(c, name))));
                for (var copy : copies.entrySet()) {
                    if (name.startsWith(copy.getKey())) {
                        String mtp = copy.getValue() + name.substring(copy.getKey().length());
                        entries.add(TestCheckpoints.Entry.of(mtp, TestCheckpoints.bytes(mtp, t.dtype(), t.shape(), randomBf16(random, t))));
                    }
                }
            }
        }
        own.forEach((name, shape) -> entries.add(entry(random, name, shape)));
        Path dir = TestCheckpoints.write(tmp.resolve("hf-mtp-" + fixtureName), entries, 2_000_000);
        var json = new com.fasterxml.jackson.databind.ObjectMapper();
        var config = (com.fasterxml.jackson.databind.node.ObjectNode) json.readTree(fixture.resolve("config.json").toFile());
        config.put(countKey, 1);
        json.writeValue(dir.resolve("config.json").toFile(), config);
        return dir;
    }

    /** Import to Megatron-Core (safetensors and torch_dist), export back: the HF folder again, MTP tensors included. */
    private Path importAndRoundTrip(Path hf) {
        Path mcore = CliRun.succeeding("import", "--ckpt-format", "safetensors", "--in", hf.toString(), "--out", tmp.resolve("m").toString());
        assertSameTensors(hf, CliRun.succeeding("export", "--in", mcore.toString(), "--hf-config", hf.toString(), "--out", tmp.resolve("back").toString()));
        Path td = CliRun.succeeding("import", "--in", hf.toString(), "--out", tmp.resolve("td").toString());
        assertSameTensors(hf, CliRun.succeeding("export", "--in", td.toString(), "--hf-config", hf.toString(), "--out", tmp.resolve("back2").toString()));
        return mcore;
    }

    /**
     * Qwen3-Next's MTP layer as Megatron-Bridge maps it (src/megatron/bridge/models/qwen/qwen3_next_bridge.py, lines 122-132:
     * mtp.fc -> mtp.layers.0.eh_proj, mtp.pre_fc_norm_embedding -> enorm, mtp.pre_fc_norm_hidden -> hnorm, mtp.norm ->
     * final_layernorm, mtp.layers.0.{input_layernorm, post_attention_layernorm, mlp.gate, self_attn.*} under
     * mtp.layers.0.mtp_model_layer.; line 156, its q/k/v merged as the decoder's; line 236, the shared expert's gate). The
     * fixture's full-attention layer 3 stands in for the MTP layer; config mtp_num_hidden_layers 1 (auto_bridge.py
     * MTP_CONFIG_FIELDS).
     */
    @Test
    void qwen3NextMtpLayerMapsAsMegatronBridgeMapsIt() throws Exception {
        int hidden = 128;
        Path hf = withMtpTensors("qwen3_next", java.util.Map.of("model.layers.3.", "mtp.layers.0."), java.util.Map.of(
                "mtp.fc.weight", Shape.of(hidden, 2L * hidden), "mtp.pre_fc_norm_embedding.weight", Shape.of(hidden),
                "mtp.pre_fc_norm_hidden.weight", Shape.of(hidden), "mtp.norm.weight", Shape.of(hidden)), "mtp_num_hidden_layers");
        Path mcore = importAndRoundTrip(hf);
        try (Checkpoint h = Checkpoints.open(hf); Checkpoint m = Checkpoints.open(mcore)) {
            assertArrayEquals(bytes(h, "mtp.fc.weight"), bytes(m, "mtp.layers.0.eh_proj.weight"));
            assertArrayEquals(bytes(h, "mtp.pre_fc_norm_embedding.weight"), bytes(m, "mtp.layers.0.enorm.weight"));
            assertArrayEquals(bytes(h, "mtp.pre_fc_norm_hidden.weight"), bytes(m, "mtp.layers.0.hnorm.weight"));
            assertArrayEquals(bytes(h, "mtp.norm.weight"), bytes(m, "mtp.layers.0.final_layernorm.weight"));
            assertArrayEquals(bytes(h, "mtp.layers.0.input_layernorm.weight"), bytes(m, "mtp.layers.0.mtp_model_layer.self_attention.linear_qkv.layer_norm_weight"));
            assertArrayEquals(bytes(h, "mtp.layers.0.self_attn.o_proj.weight"), bytes(m, "mtp.layers.0.mtp_model_layer.self_attention.linear_proj.weight"));
            assertArrayEquals(bytes(h, "mtp.layers.0.mlp.shared_expert_gate.weight"), bytes(m, "mtp.layers.0.mtp_model_layer.mlp.shared_experts.gate_weight"));
            assertArrayEquals(bytes(h, "mtp.layers.0.mlp.experts.4.down_proj.weight"), bytes(m, "mtp.layers.0.mtp_model_layer.mlp.experts.linear_fc2.weight4"));
            // The gated q/k/v: per KV group the queries of its two heads, their gates, k, v (each head of q_proj is [query ; gate]).
            byte[] q = bytes(h, "mtp.layers.0.self_attn.q_proj.weight");
            byte[] k = bytes(h, "mtp.layers.0.self_attn.k_proj.weight");
            int row = hidden * 2;
            byte[] qkv = bytes(m, "mtp.layers.0.mtp_model_layer.self_attention.linear_qkv.weight");
            // group 1 starts after group 0's 2 queries, 2 gates, k and v (6 x 32 rows); its first rows are head 2's query.
            assertArrayEquals(java.util.Arrays.copyOfRange(q, 2 * 64 * row, (2 * 64 + 32) * row), java.util.Arrays.copyOfRange(qkv, 6 * 32 * row, 7 * 32 * row));
            assertArrayEquals(java.util.Arrays.copyOfRange(k, 32 * row, 64 * row), java.util.Arrays.copyOfRange(qkv, 10 * 32 * row, 11 * 32 * row));
        }
        // quantize keeps the MTP weights in BF16 and lists them as Model Optimizer's hf_ptq does for Qwen3-Next's mtp.* shard:
        // the prefixes "mtp" and "mtp.layers.0" (examples/hf_ptq/example_utils.py, _keys_to_prefixes), each with "*".
        Path q = CliRun.succeeding("quantize", "--format", "nvfp4", "--in", hf.toString(), "--out", tmp.resolve("q").toString());
        try (Checkpoint c = Checkpoints.open(q)) {
            assertEquals(DType.BF16, c.tensor("mtp.fc.weight").dtype());
            assertEquals(DType.BF16, c.tensor("mtp.layers.0.mlp.experts.2.up_proj.weight").dtype());
            assertEquals(DType.U8, c.tensor("model.layers.3.mlp.experts.2.up_proj.weight").dtype());
        }
        List<String> excluded = new ArrayList<>();
        new com.fasterxml.jackson.databind.ObjectMapper().readTree(q.resolve("hf_quant_config.json").toFile()).at("/quantization/exclude_modules")
                .forEach(n -> excluded.add(n.asText()));
        assertEquals(true, excluded.contains("mtp*"), excluded.toString());
    }

    /**
     * Nemotron 3 Super's MTP layer as Megatron-Bridge maps it (src/megatron/bridge/models/nemotronh/nemotron_h_bridge.py,
     * lines 443-505 and 566: Megatron-Core's mtp.layers.<m>.mtp_model_layer.layers.<i>. is HF's mtp.layers.<m x block + i>.;
     * enorm, hnorm and eh_proj sit on the block's first HF layer, final_layernorm on its last; the inner layers' tensors are
     * the decoder's). The latent fixture's MTP block is [attention, MoE] (mtp_layers_block_type); its layers 1 and 2 stand in.
     */
    @Test
    void nemotronHMtpBlockMapsAsMegatronBridgeMapsIt() throws Exception {
        int hidden = new com.fasterxml.jackson.databind.ObjectMapper().readTree(Shared.fixture("nemotron_h_latent").resolve("hf/config.json").toFile())
                .get("hidden_size").asInt();
        Path hf = withMtpTensors("nemotron_h_latent", java.util.Map.of("backbone.layers.1.", "mtp.layers.0.", "backbone.layers.2.", "mtp.layers.1."),
                java.util.Map.of("mtp.layers.0.enorm.weight", Shape.of(hidden), "mtp.layers.0.hnorm.weight", Shape.of(hidden),
                        "mtp.layers.0.eh_proj.weight", Shape.of(hidden, 2L * hidden), "mtp.layers.1.final_layernorm.weight", Shape.of(hidden)),
                "num_nextn_predict_layers");
        Path mcore = importAndRoundTrip(hf);
        try (Checkpoint h = Checkpoints.open(hf); Checkpoint m = Checkpoints.open(mcore)) {
            assertArrayEquals(bytes(h, "mtp.layers.0.eh_proj.weight"), bytes(m, "mtp.layers.0.eh_proj.weight"));
            assertArrayEquals(bytes(h, "mtp.layers.0.enorm.weight"), bytes(m, "mtp.layers.0.enorm.weight"));
            assertArrayEquals(bytes(h, "mtp.layers.1.final_layernorm.weight"), bytes(m, "mtp.layers.0.final_layernorm.weight"));
            assertArrayEquals(bytes(h, "mtp.layers.0.norm.weight"), bytes(m, "mtp.layers.0.mtp_model_layer.layers.0.self_attention.linear_qkv.layer_norm_weight"));
            assertArrayEquals(bytes(h, "mtp.layers.0.mixer.o_proj.weight"), bytes(m, "mtp.layers.0.mtp_model_layer.layers.0.self_attention.linear_proj.weight"));
            assertArrayEquals(bytes(h, "mtp.layers.1.norm.weight"), bytes(m, "mtp.layers.0.mtp_model_layer.layers.1.pre_mlp_layernorm.weight"));
            assertArrayEquals(bytes(h, "mtp.layers.1.mixer.gate.weight"), bytes(m, "mtp.layers.0.mtp_model_layer.layers.1.mlp.router.weight"));
            assertArrayEquals(bytes(h, "mtp.layers.1.mixer.experts.3.up_proj.weight"), bytes(m, "mtp.layers.0.mtp_model_layer.layers.1.mlp.experts.linear_fc1.weight3"));
            assertArrayEquals(bytes(h, "mtp.layers.1.mixer.fc1_latent_proj.weight"), bytes(m, "mtp.layers.0.mtp_model_layer.layers.1.mlp.fc1_latent_proj.weight"));
        }
    }
}
