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
}
