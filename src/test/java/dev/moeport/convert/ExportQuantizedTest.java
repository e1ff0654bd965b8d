package dev.moeport.convert;

import static dev.moeport.testing.TestCheckpoints.assertSameTensors;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.moeport.cli.CliRun;
import dev.moeport.format.Checkpoint;
import dev.moeport.format.Checkpoints;
import dev.moeport.tensor.DType;
import dev.moeport.tensor.FloatFormats;
import dev.moeport.tensor.Tensor;
import dev.moeport.testing.Shared;
import dev.moeport.testing.TestCheckpoints.Entry;
import dev.moeport.testing.TestCheckpoints;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** {@code moeport export --format}: the quantized export of the Megatron-Core fixture, and the scale sharing rules. */
class ExportQuantizedTest {
    private static final Path FIXTURE = Shared.fixture("nemotron_h_tiny");
    private static final Path HF = FIXTURE.resolve("hf");
    private static final float NVFP4_SCALE2 = 6.0f * 448.0f;

    @TempDir
    Path tmp;

    @ParameterizedTest
    @ValueSource(strings = {"nvfp4", "fp8", "mxfp8", "int4_g128", "fp8_pb"})
    void equalsWhatQuantizeMakesOfTheHfFolder(String format) {
        Path exported = CliRun.succeeding("export", "--in", FIXTURE.resolve("mcore_te").toString(), "--hf-config", HF.toString(),
                "--out", tmp.resolve("export").toString(), "--format", format);
        Path quantized = CliRun.succeeding("quantize", "--in", HF.toString(), "--out", tmp.resolve("quantize").toString(), "--format", format);
        assertSameTensors(quantized, exported);
    }

    private static float f32(Checkpoint c, String name, Arena arena) {
        return c.tensor(name).bytes(arena).get(FloatFormats.FLOAT_LE, 0);
    }

    /** The largest |x| of BF16 tensors, from their bits. */
    private static float amax(Arena arena, Tensor... tensors) {
        float max = 0;
        for (Tensor t : tensors) {
            MemorySegment bytes = t.bytes(arena);
            for (long i = 0; i < t.numel(); i++) {
                max = Math.max(max, Math.abs(Float.intBitsToFloat(bytes.getAtIndex(FloatFormats.SHORT_LE, i) << 16)));
            }
        }
        return max;
    }

    @Test
    void qkvPartsShareTheFusedTensorsScale() {
        Path out = CliRun.succeeding("export", "--in", FIXTURE.resolve("mcore_te").toString(), "--hf-config", HF.toString(), "--out", tmp.resolve("o").toString(),
                "--format", "nvfp4");
        try (Checkpoint mcore = Checkpoints.open(FIXTURE.resolve("mcore_te")); Checkpoint q = Checkpoints.open(out); Arena arena = Arena.ofConfined()) {
            float expected = amax(arena, mcore.tensor("decoder.layers.1.self_attention.linear_qkv.weight")) / NVFP4_SCALE2;
            for (String p : List.of("q_proj", "k_proj", "v_proj")) {
                assertEquals(expected, f32(q, "backbone.layers.1.mixer." + p + ".weight_scale_2", arena), 0f, p);
            }
        }
    }

    @Test
    void gatedExpertsShareOneScaleForGateAndUp() {
        Path qwen = Shared.fixture("qwen3_moe/hf");
        Path mcore = CliRun.succeeding("import", "--ckpt-format", "safetensors", "--in", qwen.toString(), "--out", tmp.resolve("mcore").toString());
        Path out = CliRun.succeeding("export", "--in", mcore.toString(), "--hf-config", qwen.toString(), "--out", tmp.resolve("o").toString(), "--format", "nvfp4");
        try (Checkpoint hf = Checkpoints.open(qwen); Checkpoint q = Checkpoints.open(out); Arena arena = Arena.ofConfined()) {
            for (String prefix : List.of("model.layers.1.mlp.experts.5.", "model.layers.0.mlp.")) {
                float expected = amax(arena, hf.tensor(prefix + "gate_proj.weight"), hf.tensor(prefix + "up_proj.weight")) / NVFP4_SCALE2;
                assertEquals(expected, f32(q, prefix + "gate_proj.weight_scale_2", arena), 0f, prefix);
                assertEquals(expected, f32(q, prefix + "up_proj.weight_scale_2", arena), 0f, prefix);
            }
        }
    }

    @Test
    void calibratedAmaxFeedsTheScalesAndExpertsShareOneInputScale() throws Exception {
        Path calibrated = tmp.resolve("calibrated");
        float[] weightAmax = {0.5f, 0.6f, 0.7f, 0.8f, 0.9f, 1.0f, 1.1f, 1.2f};
        try (Checkpoint seq = Checkpoints.open(FIXTURE.resolve("mcore_seq"))) {
            List<Entry> entries = new ArrayList<>(TestCheckpoints.entries(seq, n -> true));
            for (int e = 0; e < 8; e++) {
                String module = "decoder.layers.2.mlp.experts.local_experts." + e + ".linear_fc1";
                entries.add(Entry.of(module + ".weight_quantizer._amax", TestCheckpoints.f32("w", weightAmax[e])));
                entries.add(Entry.of(module + ".input_quantizer._amax", TestCheckpoints.f32("i", 2.0f + e)));
            }
            entries.add(Entry.of("decoder.layers.1.self_attention.linear_qkv.weight_quantizer._amax", TestCheckpoints.f32("w", 3.0f)));
            entries.add(Entry.of("decoder.layers.1.self_attention.linear_qkv.input_quantizer._amax", TestCheckpoints.f32("i", 5.0f)));
            TestCheckpoints.write(calibrated, entries, 1L << 30);
        }
        Path out = CliRun.succeeding("export", "--in", calibrated.toString(), "--hf-config", HF.toString(), "--out", tmp.resolve("o").toString(), "--format", "nvfp4");
        try (Checkpoint q = Checkpoints.open(out); Arena arena = Arena.ofConfined()) {
            for (int e = 0; e < 8; e++) {
                String module = "backbone.layers.2.mixer.experts." + e + ".up_proj";
                assertEquals(weightAmax[e] / NVFP4_SCALE2, f32(q, module + ".weight_scale_2", arena), 0f, module);
                assertEquals(9.0f / NVFP4_SCALE2, f32(q, module + ".input_scale", arena), 0f, "one input scale for all experts: " + module);
                assertFalse(q.contains("backbone.layers.2.mixer.experts." + e + ".down_proj.input_scale"), "fc2 was not calibrated");
            }
            for (String p : List.of("q_proj", "k_proj", "v_proj")) {
                assertEquals(3.0f / NVFP4_SCALE2, f32(q, "backbone.layers.1.mixer." + p + ".weight_scale_2", arena), 0f, p);
                assertEquals(5.0f / NVFP4_SCALE2, f32(q, "backbone.layers.1.mixer." + p + ".input_scale", arena), 0f, p);
            }
            assertTrue(q.tensors().keySet().stream().noneMatch(n -> n.contains("_quantizer")));
        }
        JsonNode config = new ObjectMapper().readTree(out.resolve("config.json").toFile());
        // Most modules have no calibrated input: their NVFP4 weights go with unquantized activations, Model Optimizer's
        // W4A16_NVFP4, beside the calibrated NVFP4 ones: MIXED_PRECISION, layer by layer (quant_utils.py process_layer_quant_config).
        assertEquals("MIXED_PRECISION", config.at("/quantization_config/quant_algo").asText());
        assertEquals("NVFP4", config.at("/quantization_config/quantized_layers/backbone.layers.2.mixer.experts.3.up_proj/quant_algo").asText());
        assertEquals("W4A16_NVFP4", config.at("/quantization_config/quantized_layers/backbone.layers.2.mixer.experts.3.down_proj/quant_algo").asText());
        // Quantizing only the calibrated modules: every one has a static input scale, and the config says so.
        Path calibratedOnly = CliRun.succeeding("export", "--in", calibrated.toString(), "--hf-config", HF.toString(), "--out",
                tmp.resolve("static").toString(), "--format", "nvfp4", "--include", "*layers.1.mixer.[qkv]_proj", "--include", "*layers.2.mixer.experts.*.up_proj");
        JsonNode staticConfig = new ObjectMapper().readTree(calibratedOnly.resolve("config.json").toFile());
        assertFalse(staticConfig.at("/quantization_config/config_groups/group_0/input_activations/dynamic").asBoolean(), "static input scales");
        // Weight-only formats carry no input scale, calibrated or not.
        Path weightOnly = CliRun.succeeding("export", "--in", calibrated.toString(), "--hf-config", HF.toString(), "--out",
                tmp.resolve("w4").toString(), "--format", "int4_g128");
        try (Checkpoint q = Checkpoints.open(weightOnly)) {
            assertTrue(q.tensors().keySet().stream().noneMatch(n -> n.endsWith(".input_scale")));
        }
    }

    @Test
    void theAmaxIsTakenOnTheWeightInItsExportDtype() throws Exception {
        // An f32 weight whose largest element rounds up when the export casts it to bf16.
        String name = "decoder.layers.1.self_attention.linear_proj.weight";
        float big = 1.00390625f + 0x1p-12f;
        Path in = tmp.resolve("f32");
        try (Checkpoint te = Checkpoints.open(FIXTURE.resolve("mcore_te")); Arena arena = Arena.ofConfined()) {
            Tensor bf16 = te.tensor(name);
            MemorySegment src = bf16.bytes(arena);
            byte[] f32 = new byte[(int) bf16.numel() * 4];
            MemorySegment dst = MemorySegment.ofArray(f32);
            for (long i = 0; i < bf16.numel(); i++) {
                dst.setAtIndex(FloatFormats.FLOAT_LE, i, Float.intBitsToFloat(src.getAtIndex(FloatFormats.SHORT_LE, i) << 16));
            }
            dst.setAtIndex(FloatFormats.FLOAT_LE, 77, big);
            List<Entry> entries = new ArrayList<>(TestCheckpoints.entries(te, n -> !n.equals(name)));
            entries.add(Entry.of(name, TestCheckpoints.bytes(name, DType.F32, bf16.shape(), f32)));
            TestCheckpoints.write(in, entries, 1L << 30);
        }
        Path out = CliRun.succeeding("export", "--in", in.toString(), "--hf-config", HF.toString(), "--out", tmp.resolve("o").toString(),
                "--format", "nvfp4", "--dtype", "bf16");
        try (Checkpoint q = Checkpoints.open(out); Arena arena = Arena.ofConfined()) {
            assertEquals(1.0078125f / NVFP4_SCALE2, f32(q, "backbone.layers.1.mixer.o_proj.weight_scale_2", arena), 0f,
                    "bf16(" + big + ") = 1.0078125 is the weight's amax");
        }
    }

    @Test
    void excludeIncludeAndTheQuantConfigs() throws Exception {
        Path out = CliRun.succeeding("export", "--in", FIXTURE.resolve("mcore_te").toString(), "--hf-config", HF.toString(), "--out", tmp.resolve("o").toString(),
                "--format", "fp8", "--include", "*experts*", "--exclude", "*layers.5.*");
        try (Checkpoint q = Checkpoints.open(out)) {
            assertEquals(DType.F8_E4M3, q.tensor("backbone.layers.2.mixer.experts.0.up_proj.weight").dtype());
            assertEquals(DType.BF16, q.tensor("backbone.layers.5.mixer.experts.0.up_proj.weight").dtype());
            assertEquals(DType.F8_E4M3, q.tensor("backbone.layers.2.mixer.shared_experts.up_proj.weight").dtype(), "*experts* matches shared experts too");
            assertEquals(DType.BF16, q.tensor("backbone.layers.2.mixer.gate.weight").dtype(), "default exclusions still apply");
        }
        JsonNode hfQuant = new ObjectMapper().readTree(out.resolve("hf_quant_config.json").toFile());
        assertEquals("FP8", hfQuant.at("/quantization/quant_algo").asText());
        List<String> excluded = new ArrayList<>();
        hfQuant.at("/quantization/exclude_modules").forEach(n -> excluded.add(n.asText()));
        // Model Optimizer's wildcard forms (quant_utils.py, _prefix_wildcard_summarize_exclude_modules) match as fnmatch does.
        List<dev.moeport.util.Glob> globs = excluded.stream().map(dev.moeport.util.Glob::of).toList();
        assertTrue(dev.moeport.util.Glob.anyMatches(globs, "backbone.layers.5.mixer.experts.3.down_proj"), excluded.toString());
        assertTrue(dev.moeport.util.Glob.anyMatches(globs, "backbone.layers.1.mixer.q_proj"), "not included: " + excluded);
        assertFalse(dev.moeport.util.Glob.anyMatches(globs, "backbone.layers.2.mixer.experts.3.down_proj"), excluded.toString());
    }
}
