package dev.moeport.convert;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.moeport.cli.CliRun;
import dev.moeport.format.Checkpoint;
import dev.moeport.format.Checkpoints;
import dev.moeport.quant.QuantFormat;
import dev.moeport.quant.QuantKernels;
import dev.moeport.tensor.DType;
import dev.moeport.tensor.FloatFormats;
import dev.moeport.tensor.Shape;
import dev.moeport.tensor.Tensor;
import dev.moeport.testing.Shared;
import dev.moeport.testing.TestCheckpoints.Entry;
import dev.moeport.testing.TestCheckpoints;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The quantized layouts users meet on the Hub, made from the fixtures with moeport's own kernels and
 * decoded by {@code moeport dequantize}; the expected values are decoded here, independently, from
 * the format's definition.
 */
class HubQuantizedLayoutsTest {
    private static final float[] E2M1 = {0f, 0.5f, 1f, 1.5f, 2f, 3f, 4f, 6f};

    @TempDir
    Path tmp;

    private static Path writeConfig(Path from, Path to, String quantMethod) throws Exception {
        ObjectMapper json = new ObjectMapper();
        ObjectNode config = (ObjectNode) json.readTree(from.resolve("config.json").toFile());
        config.putObject("quantization_config").put("quant_method", quantMethod);
        Files.createDirectories(to);
        json.writeValue(to.resolve("config.json").toFile(), config);
        return to;
    }

    /** BF16 bits of f, rounded to nearest even. */
    private static short bf16(float f) {
        int bits = Float.floatToRawIntBits(f);
        return (short) ((bits + 0x7FFF + ((bits >>> 16) & 1)) >>> 16);
    }

    @Test
    void gptOssMxfp4ExpertsDecodeToTheRoundTripOfTheFormat() throws Exception {
        Path hf = Shared.fixture("gpt_oss/hf");
        Path quantized = writeConfig(hf, tmp.resolve("mxfp4"), "mxfp4");
        List<byte[][]> expectedByTensor = new ArrayList<>();
        List<String> fusedNames = new ArrayList<>();
        try (Checkpoint c = Checkpoints.open(hf); Arena arena = Arena.ofConfined()) {
            List<Entry> entries = new ArrayList<>(TestCheckpoints.entries(c, n -> !n.endsWith("experts.gate_up_proj") && !n.endsWith("experts.down_proj")));
            for (String name : c.tensors().keySet()) {
                if (!name.endsWith("experts.gate_up_proj") && !name.endsWith("experts.down_proj")) {
                    continue;
                }
                Tensor t = c.tensor(name); // BF16 [E, in, out]
                long experts = t.shape().dim(0);
                long in = t.shape().dim(1);
                long out = t.shape().dim(2);
                byte[] blocks = new byte[(int) (experts * out * in / 2)];
                byte[] scales = new byte[(int) (experts * out * in / 32)];
                for (long e = 0; e < experts; e++) {
                    // The published layout stores each expert as [out, in]: transpose, then quantize rows of `in`.
                    MemorySegment slab = t.select(e, "x").bytes(arena);
                    MemorySegment transposed = arena.allocate(in * out * 2);
                    for (long i = 0; i < in; i++) {
                        for (long o = 0; o < out; o++) {
                            transposed.setAtIndex(FloatFormats.SHORT_LE, o * in + i, slab.getAtIndex(FloatFormats.SHORT_LE, i * out + o));
                        }
                    }
                    MemorySegment w = MemorySegment.ofArray(blocks).asSlice(e * out * in / 2, out * in / 2);
                    MemorySegment s = MemorySegment.ofArray(scales).asSlice(e * out * in / 32, out * in / 32);
                    QuantKernels.get().quantize(QuantFormat.MXFP4, transposed, DType.BF16, out, in, 0f, w, s);
                }
                entries.add(Entry.of(name + "_blocks", TestCheckpoints.bytes(name + "_blocks", DType.U8, Shape.of(experts, out, in / 32, 16), blocks)));
                entries.add(Entry.of(name + "_scales", TestCheckpoints.bytes(name + "_scales", DType.U8, Shape.of(experts, out, in / 32), scales)));
                // Expected: E2M1 code (low nibble first) times 2^(scale - 127), transposed back to [E, in, out].
                byte[] expected = new byte[(int) (experts * in * out * 2)];
                MemorySegment x = MemorySegment.ofArray(expected);
                for (long e = 0; e < experts; e++) {
                    for (long o = 0; o < out; o++) {
                        for (long i = 0; i < in; i++) {
                            int packed = blocks[(int) ((e * out * in + o * in + i) / 2)] & 0xFF;
                            int code = i % 2 == 0 ? packed & 0xF : packed >>> 4;
                            int scale = scales[(int) ((e * out * in + o * in + i) / 32)] & 0xFF;
                            float value = (code >= 8 ? -1 : 1) * E2M1[code & 7] * (float) Math.pow(2, scale - 127);
                            x.setAtIndex(FloatFormats.SHORT_LE, e * in * out + i * out + o, bf16(value));
                        }
                    }
                }
                expectedByTensor.add(new byte[][] {expected});
                fusedNames.add(name);
            }
            TestCheckpoints.write(quantized, entries, 1L << 30);
        }
        Path decoded = tmp.resolve("decoded");
        CliRun r = CliRun.of("dequantize", "--in", quantized.toString(), "--out", decoded.toString());
        assertEquals(0, r.code(), r.err());
        try (Checkpoint d = Checkpoints.open(decoded); Arena arena = Arena.ofConfined()) {
            for (int k = 0; k < fusedNames.size(); k++) {
                Tensor t = d.tensor(fusedNames.get(k));
                assertEquals(DType.BF16, t.dtype());
                assertEquals(-1, t.bytes(arena).mismatch(MemorySegment.ofArray(expectedByTensor.get(k)[0])), fusedNames.get(k));
            }
            assertFalse(d.tensors().keySet().stream().anyMatch(n -> n.endsWith("_blocks") || n.endsWith("_scales")));
        }
        assertFalse(Files.readString(decoded.resolve("config.json")).contains("quantization_config"));
    }

    /** OCP E4M3FN decoded from its bits. */
    private static float e4m3(byte b) {
        int bits = b & 0xFF;
        int sign = bits >>> 7;
        int exponent = (bits >>> 3) & 0xF;
        int mantissa = bits & 7;
        if (exponent == 0xF && mantissa == 7) {
            return Float.NaN;
        }
        float magnitude = exponent == 0 ? mantissa / 8f * (float) Math.pow(2, -6) : (1 + mantissa / 8f) * (float) Math.pow(2, exponent - 7);
        return sign == 1 ? -magnitude : magnitude;
    }

    @Test
    void deepSeekFp8BlocksDecodeToTheValueTimesItsBlockScale() throws Exception {
        Path hf = Shared.fixture("deepseek_v3/hf");
        Path quantized = writeConfig(hf, tmp.resolve("fp8"), "fp8");
        List<String> quantizedNames = new ArrayList<>();
        try (Checkpoint c = Checkpoints.open(hf); Arena arena = Arena.ofConfined()) {
            List<Entry> entries = new ArrayList<>();
            for (String name : c.tensors().keySet()) {
                Tensor t = c.tensor(name);
                boolean quantize = name.endsWith("_proj.weight") && t.rank() == 2;
                if (!quantize) {
                    entries.add(Entry.of(name, t));
                    continue;
                }
                long rows = t.shape().dim(0);
                long cols = t.shape().dim(1);
                Shape scaleShape = QuantFormat.FP8_PB.scaleShape(t.shape());
                byte[] weight = new byte[(int) (rows * cols)];
                byte[] scale = new byte[(int) (scaleShape.numel() * 4)];
                QuantKernels.get().quantize(QuantFormat.FP8_PB, t.bytes(arena), DType.BF16, rows, cols, 0f, MemorySegment.ofArray(weight),
                        MemorySegment.ofArray(scale));
                entries.add(Entry.of(name, TestCheckpoints.bytes(name, DType.F8_E4M3, t.shape(), weight)));
                String inv = name.replace(".weight", ".weight_scale_inv");
                entries.add(Entry.of(inv, TestCheckpoints.bytes(inv, DType.F32, scaleShape, scale)));
                quantizedNames.add(name);
            }
            TestCheckpoints.write(quantized, entries, 1L << 30);
        }
        Path decoded = tmp.resolve("decoded");
        CliRun r = CliRun.of("dequantize", "--in", quantized.toString(), "--out", decoded.toString());
        assertEquals(0, r.code(), r.err());
        try (Checkpoint q = Checkpoints.open(quantized); Checkpoint d = Checkpoints.open(decoded); Arena arena = Arena.ofConfined()) {
            for (String name : quantizedNames) {
                MemorySegment fp8 = q.tensor(name).bytes(arena);
                MemorySegment inv = q.tensor(name.replace(".weight", ".weight_scale_inv")).bytes(arena);
                Tensor out = d.tensor(name);
                long cols = out.shape().dim(1);
                long blocksPerRow = (cols + 127) / 128;
                MemorySegment got = out.bytes(arena);
                for (long i = 0; i < out.numel(); i++) {
                    long row = i / cols;
                    long col = i % cols;
                    float scale = inv.getAtIndex(ValueLayout.JAVA_FLOAT_UNALIGNED, row / 128 * blocksPerRow + col / 128);
                    assertEquals(bf16(e4m3(fp8.get(ValueLayout.JAVA_BYTE, i)) * scale), got.getAtIndex(FloatFormats.SHORT_LE, i), name + "[" + i + "]");
                }
            }
            assertEquals(quantizedNames.size() > 30, true, "experts, shared experts, attention and dense MLP projections");
            // Rows that start inside a 128-row block decode with that block's scales.
            String name = "model.layers.0.mlp.gate_proj.weight";
            Tensor whole = new dev.moeport.quant.DequantizedTensor(QuantKernels.get(), QuantFormat.FP8_PB, q.tensor(name),
                    q.tensor(name.replace(".weight", ".weight_scale_inv")), null, DType.BF16);
            long rowBytes = whole.shape().dim(1) * 2;
            MemorySegment all = whole.bytes(arena);
            MemorySegment part = whole.narrow(100, 200, "part").bytes(arena);
            assertEquals(-1, part.mismatch(all.asSlice(100 * rowBytes, 200 * rowBytes)));
        }
    }
}
