package dev.moeport.cli;

import static dev.moeport.testing.TestCheckpoints.assertSameTensor;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.moeport.format.Checkpoint;
import dev.moeport.format.Checkpoints;
import dev.moeport.tensor.DType;
import dev.moeport.tensor.FloatFormats;
import dev.moeport.tensor.Shape;
import dev.moeport.tensor.Tensor;
import dev.moeport.testing.Shared;
import dev.moeport.testing.TestCheckpoints.Entry;
import dev.moeport.testing.TestCheckpoints;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

/** {@code moeport quantize} and {@code dequantize} end to end, against ModelOpt's golden files and the HF fixture. */
class QuantizeCommandTest {
    private static final String MODULE = "model.layers.0.mlp.down_proj";
    private static final Path HF = Shared.fixture("nemotron_h_tiny/hf");

    @TempDir
    Path tmp;

    static Stream<String> goldenFiles() throws Exception {
        try (Stream<Path> files = Files.list(Shared.golden("quant"))) {
            return files.map(p -> p.getFileName().toString()).sorted().toList().stream();
        }
    }

    /** The golden files that hold ModelOpt's dequantized weight ({@code dequant}). */
    static Stream<String> goldenFilesWithDequant() throws Exception {
        List<String> withDequant = new ArrayList<>();
        for (String file : goldenFiles().toList()) {
            try (Checkpoint golden = Checkpoints.open(Shared.golden("quant").resolve(file))) {
                if (golden.contains("dequant")) {
                    withDequant.add(file);
                }
            }
        }
        assertFalse(withDequant.isEmpty(), "no golden file holds a dequant tensor");
        return withDequant.stream();
    }

    private static String format(String goldenFile) {
        String name = goldenFile.substring(0, goldenFile.indexOf("__"));
        return name.equals("nvfp4_amax") ? "nvfp4" : name;
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("goldenFiles")
    void quantizeReproducesModelOptsBytes(String file) throws Exception {
        Path in = tmp.resolve("in");
        try (Checkpoint golden = Checkpoints.open(Shared.golden("quant").resolve(file))) {
            List<Entry> entries = new ArrayList<>(List.of(Entry.of(MODULE + ".weight", golden.tensor("w"))));
            if (golden.contains("amax")) {
                // ModelOpt's calibrated amax sits beside the weight, as its quantizer state.
                entries.add(Entry.of(MODULE + ".weight_quantizer._amax", golden.tensor("amax")));
            }
            TestCheckpoints.write(in, entries, 1L << 30);
            Path out = tmp.resolve("out");
            CliRun r = CliRun.of("quantize", "--no-config", "--format", format(file), "--in", in.toString(), "--out", out.toString());
            assertEquals(0, r.code(), r.err());
            try (Checkpoint quantized = Checkpoints.open(out)) {
                for (String output : List.of("weight", "weight_scale", "weight_scale_2")) {
                    if (output.equals("weight_scale") && format(file).equals("fp8_pb")) {
                        assertBlockGrid(golden.tensor(output), quantized.tensor(MODULE + "." + output));
                    } else if (golden.contains(output)) {
                        assertSameTensor(golden.tensor(output), quantized.tensor(MODULE + "." + output));
                    }
                }
                assertFalse(quantized.contains(MODULE + ".weight_quantizer._amax"), "calibration is not a model tensor");
            }
        }
    }

    /**
     * fp8_pb's block scales as Model Optimizer's HF export stores them: the kernel's {@code [rows, cols]} grid as
     * {@code [rows, 1, cols, 1]}, the amax its block quantizer keeps (tensor_quantizer.py _setup_for_blockquant lines
     * 1018-1043 reshape the weight to {@code [rows, 128, cols, 128]}, _get_amax line 748 reduces with keepdims=True,
     * export_amax lines 1087-1117 squeezes only non-block amaxes) divided as is (quant_utils.py get_scaling_factor
     * lines 225-242), which vLLM's ModelOptFp8PbWoLinearMethod allocates as its weight_scale parameter.
     */
    private static void assertBlockGrid(Tensor golden, Tensor stored) {
        assertEquals(golden.dtype(), stored.dtype(), "weight_scale dtype");
        assertEquals(Shape.of(golden.shape().dim(0), 1, golden.shape().dim(1), 1), stored.shape(), "weight_scale shape");
        try (Arena arena = Arena.ofConfined()) {
            assertArrayEquals(golden.bytes(arena).toArray(java.lang.foreign.ValueLayout.JAVA_BYTE),
                    stored.bytes(arena).toArray(java.lang.foreign.ValueLayout.JAVA_BYTE), "weight_scale bytes");
        }
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("goldenFilesWithDequant")
    void dequantizeReproducesModelOptsDequant(String file) throws Exception {
        try (Checkpoint golden = Checkpoints.open(Shared.golden("quant").resolve(file))) {
            Path in = tmp.resolve("in");
            List<Entry> entries = new ArrayList<>();
            for (String output : List.of("weight", "weight_scale", "weight_scale_2")) {
                if (golden.contains(output)) {
                    entries.add(Entry.of(MODULE + "." + output, golden.tensor(output)));
                }
            }
            TestCheckpoints.write(in, entries, 1L << 30);
            Path out = tmp.resolve("out");
            CliRun r = CliRun.of("dequantize", "--in", in.toString(), "--out", out.toString());
            assertEquals(0, r.code(), r.err());
            try (Checkpoint decoded = Checkpoints.open(out)) {
                assertEquals(1, decoded.tensors().size());
                assertSameTensor(golden.tensor("dequant"), decoded.tensor(MODULE + ".weight"));
            }
        }
    }

    /**
     * llm-compressor stores fp8's per-tensor scale as {@code [1]} and per-channel scales as {@code [out, 1]}: the format's
     * scale with a trailing 1. Such a checkpoint is read as the same format and dequantizes to the same bytes.
     */
    @ParameterizedTest(name = "{0}")
    @org.junit.jupiter.params.provider.ValueSource(strings = {"fp8__normal.safetensors", "fp8_pc__normal.safetensors"})
    void scalesStoredWithATrailingOneDecodeAsTheirFormat(String file) throws Exception {
        try (Checkpoint golden = Checkpoints.open(Shared.golden("quant").resolve(file))) {
            Tensor scale = golden.tensor("weight_scale");
            Tensor column = new dev.moeport.tensor.ReshapedTensor(scale, scale.shape().append(1));
            Path own = TestCheckpoints.write(tmp.resolve("own"), List.of(Entry.of(MODULE + ".weight", golden.tensor("weight")),
                    Entry.of(MODULE + ".weight_scale", scale)), 1L << 30);
            Path trailing = TestCheckpoints.write(tmp.resolve("trailing"), List.of(Entry.of(MODULE + ".weight", golden.tensor("weight")),
                    Entry.of(MODULE + ".weight_scale", column)), 1L << 30);
            Path a = CliRun.succeeding("dequantize", "--in", own.toString(), "--out", tmp.resolve("a").toString());
            Path b = CliRun.succeeding("dequantize", "--in", trailing.toString(), "--out", tmp.resolve("b").toString());
            try (Checkpoint expected = Checkpoints.open(a); Checkpoint actual = Checkpoints.open(b)) {
                assertSameTensor(expected.tensor(MODULE + ".weight"), actual.tensor(MODULE + ".weight"));
            }
        }
    }

    @Test
    void quantizesLinearWeightsOnlyAndWritesTheConfigs() throws Exception {
        Path out = tmp.resolve("nvfp4");
        CliRun r = CliRun.of("quantize", "--format", "nvfp4", "--in", HF.toString(), "--out", out.toString(),
                "--exclude", "*.mixer.o_proj");
        assertEquals(0, r.code(), r.err());
        try (Checkpoint in = Checkpoints.open(HF); Checkpoint q = Checkpoints.open(out)) {
            for (String name : in.tensors().keySet()) {
                boolean kept = !name.endsWith(".weight") || in.tensor(name).rank() < 2 || name.contains("embeddings") || name.startsWith("lm_head")
                        || name.contains(".mixer.gate.") || name.contains("conv1d") || name.contains(".mixer.o_proj.");
                if (kept) {
                    assertSameTensor(in.tensor(name), q.tensor(name));
                } else {
                    String module = name.substring(0, name.length() - ".weight".length());
                    assertEquals(DType.U8, q.tensor(name).dtype(), name);
                    assertEquals(DType.F8_E4M3, q.tensor(module + ".weight_scale").dtype(), name);
                    assertTrue(q.contains(module + ".weight_scale_2"), name);
                    assertFalse(q.contains(module + ".input_scale"), "no calibration, no input_scale");
                }
            }
        }
        JsonNode hfQuant = new ObjectMapper().readTree(out.resolve("hf_quant_config.json").toFile());
        // No calibrated input scale: NVFP4's weights with unquantized activations, Model Optimizer's W4A16_NVFP4
        // (quant_utils.py get_quantization_format; convert_hf_config.py's weights-only group below).
        assertEquals("W4A16_NVFP4", hfQuant.at("/quantization/quant_algo").asText());
        assertEquals(16, hfQuant.at("/quantization/group_size").asInt());
        List<String> excluded = new ArrayList<>();
        hfQuant.at("/quantization/exclude_modules").forEach(n -> excluded.add(n.asText()));
        assertTrue(excluded.containsAll(List.of("backbone.embeddings", "lm_head", "backbone.layers.2.mixer.gate", "backbone.layers.0.mixer.conv1d",
                "backbone.layers.1.mixer.o_proj")), excluded.toString());
        assertFalse(excluded.contains("backbone.layers.0.norm"), "norms are not listed");
        JsonNode config = new ObjectMapper().readTree(out.resolve("config.json").toFile());
        assertEquals("modelopt", config.at("/quantization_config/quant_method").asText());
        assertEquals(excluded.size(), config.at("/quantization_config/ignore").size());
        assertEquals(4, config.at("/quantization_config/config_groups/group_0/weights/num_bits").asInt());
        assertTrue(config.at("/quantization_config/config_groups/group_0/input_activations").isMissingNode());
        assertTrue(Files.exists(out.resolve("generation_config.json")));
    }

    @Test
    void qkvShareOneGlobalScaleFromTheirCombinedAmax() throws Exception {
        Path out = tmp.resolve("fp8");
        assertEquals(0, CliRun.of("quantize", "--format", "nvfp4", "--in", HF.toString(), "--out", out.toString()).code());
        try (Checkpoint in = Checkpoints.open(HF); Checkpoint q = Checkpoints.open(out); Arena arena = Arena.ofConfined()) {
            float amax = 0;
            for (String p : List.of("q_proj", "k_proj", "v_proj")) {
                amax = Math.max(amax, amax(in.tensor("backbone.layers.1.mixer." + p + ".weight"), arena));
            }
            for (String p : List.of("q_proj", "k_proj", "v_proj")) {
                float scale2 = q.tensor("backbone.layers.1.mixer." + p + ".weight_scale_2").bytes(arena).get(FloatFormats.FLOAT_LE, 0);
                assertEquals(amax / (6.0f * 448.0f), scale2, 0f, p);
            }
            // An expert scales on its own.
            Tensor expert = in.tensor("backbone.layers.2.mixer.experts.3.up_proj.weight");
            assertEquals(amax(expert, arena) / (6.0f * 448.0f),
                    q.tensor("backbone.layers.2.mixer.experts.3.up_proj.weight_scale_2").bytes(arena).get(FloatFormats.FLOAT_LE, 0), 0f);
        }
    }

    /** The largest |x| of a BF16 tensor, computed here from its bits. */
    static float amax(Tensor t, Arena arena) {
        MemorySegment bytes = t.bytes(arena);
        float max = 0;
        for (long i = 0; i < t.numel(); i++) {
            max = Math.max(max, Math.abs(Float.intBitsToFloat(bytes.getAtIndex(FloatFormats.SHORT_LE, i) << 16)));
        }
        return max;
    }

    @Test
    void anAllZeroWeightGetsScaleOneAndZeroCodes() throws Exception {
        Path in = tmp.resolve("zeros");
        TestCheckpoints.write(in, List.of(Entry.of(MODULE + ".weight",
                TestCheckpoints.bytes("w", DType.BF16, dev.moeport.tensor.Shape.of(32, 64), new byte[32 * 64 * 2]))), 1L << 30);
        for (String format : List.of("nvfp4", "fp8")) {
            Path out = tmp.resolve("out-" + format);
            CliRun r = CliRun.of("quantize", "--no-config", "--format", format, "--in", in.toString(), "--out", out.toString());
            assertEquals(0, r.code(), r.err());
            try (Checkpoint q = Checkpoints.open(out); Arena arena = Arena.ofConfined()) {
                String global = format.equals("nvfp4") ? ".weight_scale_2" : ".weight_scale";
                assertEquals(1f, q.tensor(MODULE + global).bytes(arena).get(FloatFormats.FLOAT_LE, 0), format);
                MemorySegment codes = q.tensor(MODULE + ".weight").bytes(arena);
                for (long i = 0; i < codes.byteSize(); i++) {
                    assertEquals(0, codes.get(java.lang.foreign.ValueLayout.JAVA_BYTE, i), format + " code " + i);
                }
            }
        }
    }

    @Test
    void aNanWeightIsAnErrorNamingTheTensor() throws Exception {
        Path in = tmp.resolve("nan");
        byte[] bytes = new byte[16 * 32 * 2];
        MemorySegment.ofArray(bytes).setAtIndex(FloatFormats.SHORT_LE, 5 * 32 + 7, (short) 0x7FC0);
        TestCheckpoints.write(in, List.of(Entry.of(MODULE + ".weight", TestCheckpoints.bytes("w", DType.BF16, dev.moeport.tensor.Shape.of(16, 32), bytes))),
                1L << 30);
        for (String format : List.of("nvfp4", "mxfp4", "int8_wo")) {
            CliRun r = CliRun.of("quantize", "--no-config", "--format", format, "--in", in.toString(), "--out", tmp.resolve("o-" + format).toString());
            assertEquals(1, r.code(), format);
            assertEquals("moeport: error: tensor '" + MODULE + ".weight': NaN or infinite value at [5, 7]; quantizing it would give garbage"
                    + " scales (repair the weight, or keep it unquantized with --exclude)", r.err().strip(), format);
            assertFalse(Files.exists(tmp.resolve("o-" + format).resolve("model.safetensors")));
        }
    }

    /** OCP E4M3FN, from its bits. */
    private static float e4m3(byte b) {
        int bits = b & 0xFF;
        int exponent = (bits >>> 3) & 0xF;
        int mantissa = bits & 7;
        float magnitude = exponent == 0 ? mantissa / 8f * 0x1p-6f : (1 + mantissa / 8f) * (float) Math.pow(2, exponent - 7);
        return (bits & 0x80) != 0 ? -magnitude : magnitude;
    }

    @ParameterizedTest(name = "{0}")
    @org.junit.jupiter.params.provider.ValueSource(strings = {"fp8_pc", "fp8_pb", "int8_wo", "int4_g128"})
    void everyFormatDecodesByItsDefinition(String format) throws Exception {
        Path q = CliRun.succeeding("quantize", "--format", format, "--in", HF.toString(), "--out", tmp.resolve("q").toString());
        Path d = CliRun.succeeding("dequantize", "--in", q.toString(), "--out", tmp.resolve("d").toString(), "--dtype", "f32");
        String module = "backbone.layers.2.mixer.experts.3.up_proj";
        try (Checkpoint qc = Checkpoints.open(q); Checkpoint dc = Checkpoints.open(d); Arena arena = Arena.ofConfined()) {
            MemorySegment w = qc.tensor(module + ".weight").bytes(arena);
            MemorySegment s = qc.tensor(module + ".weight_scale").bytes(arena);
            Tensor decoded = dc.tensor(module + ".weight");
            assertEquals(dev.moeport.tensor.Shape.of(128, 256), decoded.shape());
            MemorySegment got = decoded.bytes(arena);
            for (int r = 0; r < 128; r++) {
                for (int c = 0; c < 256; c++) {
                    float expected = switch (format) {
                        case "fp8_pc" -> e4m3(w.get(java.lang.foreign.ValueLayout.JAVA_BYTE, r * 256L + c)) * s.getAtIndex(FloatFormats.FLOAT_LE, r);
                        case "fp8_pb" -> e4m3(w.get(java.lang.foreign.ValueLayout.JAVA_BYTE, r * 256L + c)) * s.getAtIndex(FloatFormats.FLOAT_LE, (r / 128) * 2 + c / 128);
                        case "int8_wo" -> w.get(java.lang.foreign.ValueLayout.JAVA_BYTE, r * 256L + c) * s.getAtIndex(FloatFormats.FLOAT_LE, r);
                        default -> {
                            int b = w.get(java.lang.foreign.ValueLayout.JAVA_BYTE, (r / 2) * 256L + c) & 0xFF;
                            int nibble = r % 2 == 0 ? b & 0xF : b >>> 4;
                            yield (nibble >= 8 ? nibble - 16 : nibble) * s.getAtIndex(FloatFormats.FLOAT_LE, r * 2L + c / 128);
                        }
                    };
                    assertEquals(expected, got.getAtIndex(FloatFormats.FLOAT_LE, r * 256L + c), 0f, format + " [" + r + ", " + c + "]");
                }
            }
        }
        CliRun v = CliRun.of("verify", HF.toString(), q.toString(), "--tolerance", "15");
        assertEquals(0, v.code(), format + ": " + v.out() + v.err());
    }

    @Test
    void alreadyQuantizedOrMegatronInputIsRefused() {
        Path q = CliRun.succeeding("quantize", "--format", "fp8", "--in", HF.toString(), "--out", tmp.resolve("q").toString());
        CliRun again = CliRun.of("quantize", "--format", "nvfp4", "--in", q.toString(), "--out", tmp.resolve("qq").toString());
        assertEquals(1, again.code());
        assertTrue(again.err().contains("already quantized") && again.err().contains("dequantize it first"), again.err());
        CliRun mcore = CliRun.of("quantize", "--format", "nvfp4", "--in", Shared.fixture("nemotron_h_tiny/mcore_te").toString(),
                "--out", tmp.resolve("m").toString());
        assertEquals(1, mcore.code());
        assertTrue(mcore.err().contains("a Megatron-Core checkpoint"), mcore.err());
        CliRun none = CliRun.of("quantize", "--format", "nvfp4", "--in", HF.toString(), "--out", tmp.resolve("n").toString(), "--include", "nothing*");
        assertEquals(1, none.code());
        assertTrue(none.err().contains("no linear weight is left to quantize"), none.err());
        assertFalse(Files.exists(tmp.resolve("n")), "a failed run removes the folder it created");
    }

    @Test
    void badInputIsOneLine() {
        CliRun r = CliRun.of("quantize", "--format", "nvfp5", "--in", HF.toString(), "--out", tmp.resolve("x").toString());
        assertEquals(2, r.code());
        assertTrue(r.err().contains("unknown format 'nvfp5'"), r.err());
        CliRun none = CliRun.of("dequantize", "--in", HF.toString(), "--out", tmp.resolve("y").toString());
        assertEquals(1, none.code());
        assertTrue(none.err().contains("no quantized module found"), none.err());
    }
}
