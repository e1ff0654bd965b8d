package dev.moeport.verify;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.moeport.cli.CliRun;
import dev.moeport.tensor.DType;
import dev.moeport.tensor.Shape;
import dev.moeport.testing.TestCheckpoints;
import dev.moeport.testing.TestCheckpoints.Entry;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** verify on tensors that hold the same values in different dtypes: reported, matching unless --strict-dtype. */
class VerifyDtypeTest {
    /** bf16 bit patterns: 1.0, -2.5, 0.0, -0.0, +inf, NaN, the smallest subnormal, 3.140625. */
    private static final short[] BF16_BITS = {0x3f80, (short) 0xc020, 0x0000, (short) 0x8000, 0x7f80, 0x7fc0, 0x0001, 0x4049};

    @TempDir
    Path tmp;

    private static byte[] bf16(short[] bits) {
        ByteBuffer b = ByteBuffer.allocate(bits.length * 2).order(ByteOrder.LITTLE_ENDIAN);
        for (short s : bits) {
            b.putShort(s);
        }
        return b.array();
    }

    /** The f32 encoding of each bf16 value: the bf16 bits as the f32's upper half, exact by construction. */
    private static byte[] f32(short[] bits) {
        ByteBuffer b = ByteBuffer.allocate(bits.length * 4).order(ByteOrder.LITTLE_ENDIAN);
        for (short s : bits) {
            b.putInt((s & 0xffff) << 16);
        }
        return b.array();
    }

    private Path checkpoint(String name, DType dtype, byte[] weight, byte[] other) throws Exception {
        return TestCheckpoints.write(tmp.resolve(name), List.of(
                Entry.of("w", TestCheckpoints.bytes("w", dtype, Shape.of(2, 4), weight)),
                Entry.of("same", TestCheckpoints.bytes("same", DType.BF16, Shape.of(8), other))), 1L << 30);
    }

    @Test
    void equalValuesInAnotherDtypeMatchUnlessStrict() throws Exception {
        byte[] same = bf16(new short[] {1, 2, 3, 4, 5, 6, 7, 8});
        Path a = checkpoint("bf16", DType.BF16, bf16(BF16_BITS), same);
        Path b = checkpoint("f32", DType.F32, f32(BF16_BITS), same);

        CliRun text = CliRun.of("verify", a.toString(), b.toString());
        assertEquals(0, text.code(), text.out() + text.err());
        assertTrue(text.out().contains("identical: 1 of 2 common tensors; equal values in another dtype: 1; differing: 0"), text.out());
        assertTrue(text.out().contains("dtype only: w BF16 vs F32"), text.out());
        assertTrue(text.out().contains("MATCH"), text.out());

        CliRun json = CliRun.of("verify", a.toString(), b.toString(), "--json");
        assertEquals(0, json.code(), json.err());
        JsonNode report = new ObjectMapper().readTree(json.out());
        assertTrue(report.get("match").asBoolean());
        JsonNode w = tensor(report, "w");
        assertFalse(w.get("identical").asBoolean());
        assertTrue(w.get("dtype_only").asBoolean());
        assertTrue(w.get("within_tolerance").asBoolean());
        assertEquals("BF16", w.get("dtype_a").asText());
        assertEquals("F32", w.get("dtype_b").asText());
        assertFalse(tensor(report, "same").get("dtype_only").asBoolean());

        CliRun strict = CliRun.of("verify", a.toString(), b.toString(), "--strict-dtype");
        assertEquals(3, strict.code(), strict.out());
        assertTrue(strict.out().contains("dtype only: w BF16 vs F32 (equal values; a difference under --strict-dtype)")
                && strict.out().contains("DIFFERENT"), strict.out());
        CliRun strictJson = CliRun.of("verify", a.toString(), b.toString(), "--strict-dtype", "--json");
        assertEquals(3, strictJson.code());
        assertFalse(tensor(new ObjectMapper().readTree(strictJson.out()), "w").get("within_tolerance").asBoolean());
    }

    @Test
    void oneValueApartInAnotherDtypeStillDiffers() throws Exception {
        byte[] same = bf16(new short[] {1, 2, 3, 4, 5, 6, 7, 8});
        Path a = checkpoint("bf16", DType.BF16, bf16(BF16_BITS), same);
        byte[] off = f32(BF16_BITS);
        off[4 * 7] = 1; // 3.140625 plus one f32 ulp: a value bf16 cannot hold
        Path b = checkpoint("f32", DType.F32, off, same);
        CliRun r = CliRun.of("verify", a.toString(), b.toString(), "--json");
        assertEquals(3, r.code(), r.out());
        JsonNode w = tensor(new ObjectMapper().readTree(r.out()), "w");
        assertFalse(w.get("dtype_only").asBoolean());
        assertEquals(Math.ulp(3.140625f), w.get("max_abs_error").asDouble(), 0);
        // NaN against NaN and infinity against infinity are equal; a NaN against a number is not.
        byte[] nanAgainstNumber = f32(BF16_BITS);
        nanAgainstNumber[4 * 5 + 3] = 0x3f; // NaN (0x7fc00000) becomes 0x3fc00000 = 1.5
        CliRun nan = CliRun.of("verify", a.toString(), checkpoint("f32nan", DType.F32, nanAgainstNumber, same).toString());
        assertEquals(3, nan.code(), nan.out());
    }

    private static JsonNode tensor(JsonNode report, String name) {
        for (JsonNode t : report.get("tensors")) {
            if (t.get("name").asText().equals(name)) {
                return t;
            }
        }
        throw new AssertionError(name + " not in " + report);
    }
}
