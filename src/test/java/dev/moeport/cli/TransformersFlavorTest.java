package dev.moeport.cli;

import static dev.moeport.testing.TestCheckpoints.assertSameTensors;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.moeport.format.Checkpoint;
import dev.moeport.format.Checkpoints;
import dev.moeport.tensor.DType;
import dev.moeport.tensor.Shape;
import dev.moeport.testing.Shared;
import java.lang.foreign.Arena;
import java.lang.foreign.ValueLayout;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code --flavor transformers}: fp8_pb in the fine-grained FP8 layout DeepSeek-V3 publishes and transformers loads
 * ({@code ../shared/spec/ENGINES.md}: an E4M3 {@code weight}, an f32 {@code weight_scale_inv} per 128 x 128 block,
 * {@code quantization_config} {@code quant_method: fp8, fmt: e4m3, activation_scheme: dynamic, weight_block_size: [128, 128]}),
 * mxfp8 as transformers' mxfp8 and mxfp4 as GPT-OSS's experts (transformers 5.17's quantizers; the bytes of GPT-OSS's
 * blocks against Model Optimizer's golden outputs are {@code GptOssMxfp4Test}'s).
 */
class TransformersFlavorTest {
    private static final Path HF = Shared.fixture("qwen3_moe").resolve("hf");

    @TempDir
    Path tmp;

    @Test
    void fp8BlocksInDeepSeeksPublishedLayout() throws Exception {
        fineGrained("fp8_pb", "fp8", DType.F32, 128, 128);
    }

    /** transformers' mxfp8 (quantizers/auto.py: the fine-grained FP8 quantizer, E8M0 exponents as uint8 per [1, 32]). */
    @Test
    void mxfp8AsTransformersMxfp8() throws Exception {
        fineGrained("mxfp8", "mxfp8", DType.U8, 1, 32);
    }

    private void fineGrained(String format, String quantMethod, DType scaleType, int blockRows, int blockCols) throws Exception {
        Path t = CliRun.succeeding("quantize", "--format", format, "--flavor", "transformers", "--in", HF.toString(), "--out", tmp.resolve("t").toString());
        Path m = CliRun.succeeding("quantize", "--format", format, "--in", HF.toString(), "--out", tmp.resolve("m").toString());
        JsonNode q = new ObjectMapper().readTree(t.resolve("config.json").toFile()).get("quantization_config");
        assertEquals(quantMethod, q.get("quant_method").asText());
        assertEquals("e4m3", q.get("fmt").asText());
        assertEquals("dynamic", q.get("activation_scheme").asText());
        assertEquals("[" + blockRows + "," + blockCols + "]", q.get("weight_block_size").toString());
        List<String> kept = new ArrayList<>();
        q.get("modules_to_not_convert").forEach(n -> kept.add(n.asText()));
        assertTrue(kept.containsAll(List.of("lm_head", "model.layers.1.mlp.gate")), kept.toString());
        assertFalse(Files.exists(t.resolve("hf_quant_config.json")), "Model Optimizer's file belongs to the modelopt flavor");
        int modules = 0;
        try (Checkpoint ct = Checkpoints.open(t); Checkpoint cm = Checkpoints.open(m); Arena arena = Arena.ofConfined()) {
            for (String name : cm.tensors().keySet()) {
                if (!name.endsWith(".weight_scale")) {
                    continue;
                }
                String module = name.substring(0, name.length() - ".weight_scale".length());
                var weight = ct.tensor(module + ".weight");
                var scaleInv = ct.tensor(module + ".weight_scale_inv");
                assertFalse(ct.contains(name), "no weight_scale beside weight_scale_inv: " + module);
                assertEquals(DType.F8_E4M3, weight.dtype());
                assertEquals(scaleType, scaleInv.dtype());
                long out = weight.shape().dim(0);
                long in = weight.shape().dim(1);
                assertEquals(Shape.of((out + blockRows - 1) / blockRows, (in + blockCols - 1) / blockCols), scaleInv.shape(), module);
                // The same numbers under the other name: Model Optimizer's scale is the multiplier DeepSeek calls scale_inv.
                assertArrayEquals(cm.tensor(module + ".weight").bytes(arena).toArray(ValueLayout.JAVA_BYTE), weight.bytes(arena).toArray(ValueLayout.JAVA_BYTE));
                assertArrayEquals(cm.tensor(name).bytes(arena).toArray(ValueLayout.JAVA_BYTE), scaleInv.bytes(arena).toArray(ValueLayout.JAVA_BYTE));
                modules++;
            }
        }
        assertTrue(modules > 50, "quantized modules compared: " + modules);
        // Read back as DeepSeek's layout, it decodes to what the modelopt flavor decodes to.
        Path dt = CliRun.succeeding("dequantize", "--in", t.toString(), "--out", tmp.resolve("dt").toString());
        Path dm = CliRun.succeeding("dequantize", "--in", m.toString(), "--out", tmp.resolve("dm").toString());
        assertSameTensors(dm, dt);
        CliRun check = CliRun.of("check", t.toString());
        assertEquals(0, check.code(), check.out() + check.err());
    }

    @Test
    void formatsTransformersCannotLoadAreRefusedInOneLine() throws Exception {
        for (String format : List.of("nvfp4", "fp8", "fp8_pc", "int8_wo", "int4_g128")) {
            CliRun r = CliRun.of("quantize", "--format", format, "--flavor", "transformers", "--in", HF.toString(), "--out", tmp.resolve(format).toString());
            assertEquals(2, r.code(), r.err());
            assertTrue(r.err().startsWith("moeport: --flavor transformers cannot write " + format + ": transformers 5.17"), r.err());
            assertFalse(Files.exists(tmp.resolve(format)));
        }
        // transformers' mxfp4 converts GPT-OSS's experts alone; Qwen3-MoE's are per expert.
        CliRun r = CliRun.of("quantize", "--format", "mxfp4", "--flavor", "transformers", "--in", HF.toString(), "--out", tmp.resolve("mxfp4").toString());
        assertEquals(1, r.code(), r.err());
        assertEquals(1, r.err().lines().count(), r.err());
        assertTrue(r.err().contains("GPT-OSS's fused experts"), r.err());
        assertFalse(Files.exists(tmp.resolve("mxfp4")));
        // transformers' FP8 dequantization takes rows // scale_rows as the block: 192 rows would decode in blocks of 96.
        Path deepSeek = Shared.fixture("deepseek_v3").resolve("hf");
        r = CliRun.of("quantize", "--format", "fp8_pb", "--flavor", "transformers", "--in", deepSeek.toString(), "--out", tmp.resolve("ds").toString());
        assertEquals(1, r.code(), r.err());
        assertEquals("moeport: error: tensor 'model.layers.0.self_attn.q_b_proj.weight' is 192 x 96, not whole fp8_pb blocks of 128 x 128:"
                + " transformers' dequantization would decode it with wrong blocks or refuse it (keep it unquantized with --exclude)", r.err().strip());
        assertFalse(Files.exists(tmp.resolve("ds")));
        CliRun.succeeding("quantize", "--format", "fp8_pb", "--flavor", "transformers", "--exclude", "*q_b_proj", "--in", deepSeek.toString(),
                "--out", tmp.resolve("ds").toString());
        // One quant_method per model: no mixed recipe.
        Path recipe = tmp.resolve("recipe.json");
        Files.writeString(recipe, "{\"rules\": [{\"modules\": \"*self_attn*\", \"format\": \"fp8_pb\"}, {\"modules\": \"*\", \"format\": \"mxfp8\"}]}");
        r = CliRun.of("quantize", "--recipe", recipe.toString(), "--flavor", "transformers", "--in", HF.toString(), "--out", tmp.resolve("mixed").toString());
        assertEquals(2, r.code(), r.err());
        assertTrue(r.err().startsWith("moeport: --flavor transformers takes a recipe of one format"), r.err());
        assertFalse(Files.exists(tmp.resolve("mixed")));
        assertEquals(2, CliRun.of("quantize", "--format", "fp8_pb", "--flavor", "vllm", "--in", HF.toString(), "--out", tmp.resolve("v").toString()).code());
    }

    /**
     * GPT-OSS's fixture in its published MXFP4 layout: its fused experts as transformers' {@code Mxfp4GptOssExperts}
     * holds them (integrations/mxfp4.py: {@code gate_up_proj} {@code [E, 2 * intermediate, hidden / 32, 16]},
     * {@code down_proj} {@code [E, hidden, intermediate / 32, 16]}, scales without the last dimension), everything else
     * BF16 and listed in {@code modules_to_not_convert}; export from Megatron-Core writes the same bytes.
     */
    @Test
    void gptOssMxfp4InItsPublishedLayout() throws Exception {
        Path hf = Shared.fixture("gpt_oss").resolve("hf");
        Path t = CliRun.succeeding("quantize", "--format", "mxfp4", "--flavor", "transformers", "--in", hf.toString(), "--out", tmp.resolve("t").toString());
        ObjectMapper json = new ObjectMapper();
        JsonNode config = json.readTree(hf.resolve("config.json").toFile());
        long experts = config.get("num_local_experts").asLong();
        long hidden = config.get("hidden_size").asLong();
        long intermediate = config.get("intermediate_size").asLong();
        JsonNode q = json.readTree(t.resolve("config.json").toFile()).get("quantization_config");
        assertEquals("mxfp4", q.get("quant_method").asText());
        List<String> kept = new ArrayList<>();
        q.get("modules_to_not_convert").forEach(n -> kept.add(n.asText()));
        try (Checkpoint source = Checkpoints.open(hf); Checkpoint out = Checkpoints.open(t)) {
            int fused = 0;
            for (String name : source.tensors().keySet()) {
                if (name.endsWith("experts.gate_up_proj") || name.endsWith("experts.down_proj")) {
                    boolean gateUp = name.endsWith("gate_up_proj");
                    long rows = gateUp ? 2 * intermediate : hidden;
                    long in = gateUp ? hidden : intermediate;
                    assertFalse(out.contains(name), name);
                    assertEquals(Shape.of(experts, rows, in / 32, 16), out.tensor(name + "_blocks").shape(), name);
                    assertEquals(Shape.of(experts, rows, in / 32), out.tensor(name + "_scales").shape(), name);
                    assertEquals(DType.U8, out.tensor(name + "_blocks").dtype());
                    assertEquals(DType.U8, out.tensor(name + "_scales").dtype());
                    fused++;
                } else {
                    assertEquals(source.tensor(name).dtype(), out.tensor(name).dtype(), name);
                    assertEquals(source.tensor(name).shape(), out.tensor(name).shape(), name);
                    if (name.endsWith("_proj.weight")) {
                        assertTrue(kept.contains(name.substring(0, name.length() - ".weight".length())), name + " in " + kept);
                    }
                }
            }
            assertEquals(4, fused);
            assertEquals(source.tensors().size() + fused, out.tensors().size());
        }
        CliRun check = CliRun.of("check", t.toString());
        assertEquals(0, check.code(), check.out() + check.err());
        Path mcore = CliRun.succeeding("import", "--in", hf.toString(), "--out", tmp.resolve("mcore").toString());
        Path exported = CliRun.succeeding("export", "--in", mcore.toString(), "--hf-config", hf.toString(), "--format", "mxfp4", "--flavor", "transformers",
                "--out", tmp.resolve("e").toString());
        assertSameTensors(t, exported);
    }
}
