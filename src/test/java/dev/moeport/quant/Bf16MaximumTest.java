package dev.moeport.quant;

import static org.junit.jupiter.api.Assertions.assertEquals;

import dev.moeport.cli.CliRun;
import dev.moeport.format.Checkpoint;
import dev.moeport.format.Checkpoints;
import dev.moeport.tensor.DType;
import dev.moeport.tensor.Shape;
import dev.moeport.testing.TestCheckpoints;
import java.lang.foreign.Arena;
import java.lang.foreign.ValueLayout;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Weights at the BF16 maximum come back as Model Optimizer's dequantization gives them: FP8 multiplies in the output
 * dtype ({@code quantized_data.to(dtype) * scales.to(dtype)}, modelopt/torch/quantization/qtensor/fp8_tensor.py),
 * so 448 x bf16(amax / 448) rounds past the BF16 maximum to Inf; NVFP4's two-level scale stays finite.
 */
class Bf16MaximumTest {
    private static final short BF16_MAX = 0x7F7F;

    @TempDir
    Path tmp;

    /** Round-to-nearest-even of an f32 to BF16 bits, independent of the code under test. */
    private static short bf16(float f) {
        int bits = Float.floatToRawIntBits(f);
        return (short) ((bits + 0x7FFF + ((bits >>> 16) & 1)) >>> 16);
    }

    private static float widen(short b) {
        return Float.intBitsToFloat((b & 0xFFFF) << 16);
    }

    private short[] dequantized(String format) throws Exception {
        byte[] bytes = new byte[128 * 128 * 2];
        for (int i = 0; i < bytes.length; i += 2) {
            bytes[i] = (byte) BF16_MAX;
            bytes[i + 1] = (byte) (BF16_MAX >> 8);
        }
        Path in = TestCheckpoints.write(tmp.resolve("in-" + format), List.of(TestCheckpoints.Entry.of("model.layers.0.mlp.down_proj.weight",
                TestCheckpoints.bytes("model.layers.0.mlp.down_proj.weight", DType.BF16, Shape.of(128, 128), bytes))), Long.MAX_VALUE);
        Path q = CliRun.succeeding("quantize", "--format", format, "--no-config", "--in", in.toString(), "--out", tmp.resolve(format).toString());
        Path d = CliRun.succeeding("dequantize", "--in", q.toString(), "--out", tmp.resolve(format + "-bf16").toString());
        try (Checkpoint c = Checkpoints.open(d); Arena arena = Arena.ofConfined()) {
            return c.tensor("model.layers.0.mlp.down_proj.weight").bytes(arena).toArray(ValueLayout.JAVA_SHORT_UNALIGNED);
        }
    }

    @Test
    void fp8DequantizesTheBf16MaximumToInfAsTheReferenceDoes() throws Exception {
        float amax = widen(BF16_MAX);
        float scale = amax / 448f;
        short expected = bf16(widen(bf16(448f)) * widen(bf16(scale)));
        assertEquals((short) 0x7F80, expected, "448 x bf16(amax / 448) in BF16 is +Inf");
        short[] values = dequantized("fp8");
        assertEquals(1, Arrays.stream(toInts(values)).distinct().count());
        assertEquals(expected, values[0]);
    }

    @Test
    void nvfp4StaysFinite() throws Exception {
        short[] values = dequantized("nvfp4");
        assertEquals(1, Arrays.stream(toInts(values)).distinct().count());
        assertEquals(BF16_MAX, values[0]);
    }

    private static int[] toInts(short[] s) {
        int[] r = new int[s.length];
        for (int i = 0; i < s.length; i++) {
            r[i] = s[i];
        }
        return r;
    }
}
