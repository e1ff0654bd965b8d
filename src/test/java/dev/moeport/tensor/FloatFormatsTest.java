package dev.moeport.tensor;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.Random;
import org.junit.jupiter.api.Test;

class FloatFormatsTest {

    /** E4M3 by brute force: the nearest of the 254 finite values, ties to the even code, NaN from 480 on (OCP, no saturation). */
    private static int nearestE4m3(float f) {
        float a = Math.abs(f);
        int sign = Math.copySign(1.0f, f) < 0 ? 0x80 : 0;
        if (!(a < 464.0f) && a != 464.0f || Float.isNaN(f)) {
            return 0x7F | sign;
        }
        int best = 0;
        for (int code = 1; code <= 0x7E; code++) {
            float d = Math.abs(FloatFormats.e4m3ToFloat((byte) code) - a);
            float bestD = Math.abs(FloatFormats.e4m3ToFloat((byte) best) - a);
            if (d < bestD || d == bestD && (code & 1) == 0) {
                best = code;
            }
        }
        return best | sign;
    }

    @Test
    void e4m3RoundsToNearestEvenWithoutSaturating() {
        Random rnd = new Random(1);
        for (int code = 0; code < 0x7E; code++) {
            float lo = FloatFormats.e4m3ToFloat((byte) code);
            float hi = FloatFormats.e4m3ToFloat((byte) (code + 1));
            float mid = (lo + hi) / 2;
            for (float f : new float[] {lo, mid, Math.nextDown(mid), Math.nextUp(mid), -mid, lo + (hi - lo) * rnd.nextFloat()}) {
                assertEquals(nearestE4m3(f), FloatFormats.floatToE4m3(f) & 0xFF, "e4m3 of " + f);
            }
        }
        assertEquals(0x7E, FloatFormats.floatToE4m3(448.0f));
        assertEquals(0x7E, FloatFormats.floatToE4m3(464.0f));
        assertEquals(0x7F, FloatFormats.floatToE4m3(470.0f));
        assertEquals(0x7F, FloatFormats.floatToE4m3(480.0f));
        assertEquals((byte) 0xFF, FloatFormats.floatToE4m3(Float.NEGATIVE_INFINITY));
        assertEquals(0x7F, FloatFormats.floatToE4m3(Float.NaN));
        assertEquals((byte) 0x80, FloatFormats.floatToE4m3(-0.0f));
        assertEquals(0x01, FloatFormats.floatToE4m3(0x1p-9f));
        assertEquals(0x00, FloatFormats.floatToE4m3(0x1p-10f));
        assertEquals(0x01, FloatFormats.floatToE4m3(0x1.8p-10f));
        assertEquals(0x08, FloatFormats.floatToE4m3(Math.nextDown(0x1p-6f)));
        assertTrue(Float.isNaN(FloatFormats.e4m3ToFloat((byte) 0x7F)));
        assertTrue(Float.isNaN(FloatFormats.e4m3ToFloat((byte) 0xFF)));
        assertEquals(-448.0f, FloatFormats.e4m3ToFloat((byte) 0xFE));
        assertEquals(0x1p-9f, FloatFormats.e4m3ToFloat((byte) 0x01));
        for (int code = 0; code < 256; code++) {
            if ((code & 0x7F) != 0x7F) {
                assertEquals(code, FloatFormats.floatToE4m3(FloatFormats.e4m3ToFloat((byte) code)) & 0xFF);
            }
        }
    }

    @Test
    void bf16RoundsToNearestEven() {
        assertEquals((short) 0x3F80, FloatFormats.floatToBf16(1.0f + 0x1p-8f));
        assertEquals((short) 0x3F82, FloatFormats.floatToBf16(1.0f + 0x3p-8f));
        assertEquals((short) 0x3F81, FloatFormats.floatToBf16(Math.nextUp(1.0f + 0x1p-8f)));
        assertEquals((short) 0x7F80, FloatFormats.floatToBf16(Float.MAX_VALUE));
        assertEquals((short) 0x7FC0, FloatFormats.floatToBf16(Float.intBitsToFloat(0xFFC12345)));
        assertEquals((short) 0x8000, FloatFormats.floatToBf16(-0.0f));
        assertEquals(1.0f, FloatFormats.bf16ToFloat((short) 0x3F80));
        assertEquals(0x1p-133f, FloatFormats.bf16ToFloat((short) 1));
    }

    @Test
    void narrowFormatsAndRounding() {
        assertEquals(-0.0f, FloatFormats.e2m1ToFloat(8));
        assertEquals(-6.0f, FloatFormats.e2m1ToFloat(15));
        assertEquals(1.5f, FloatFormats.e2m1ToFloat(3));
        assertEquals(1.0f, FloatFormats.e8m0ToFloat(127));
        assertEquals(0x1p-127f, FloatFormats.e8m0ToFloat(0));
        assertEquals(0x1p127f, FloatFormats.e8m0ToFloat(254));
        assertTrue(Float.isNaN(FloatFormats.e8m0ToFloat(255)));
        assertEquals(1.0f, FloatFormats.roundTo(DType.F16, 1.0f + 0x1p-11f));
        assertEquals(1.0f + 0x1p-9f, FloatFormats.roundTo(DType.F16, 1.0f + 0x3p-11f));
        assertEquals(Float.POSITIVE_INFINITY, FloatFormats.roundTo(DType.F16, 65520.0f));
        assertEquals(0x1p-24f, FloatFormats.roundTo(DType.F16, 0x1.8p-25f));
        assertEquals(1.0f + 0x1p-23f, FloatFormats.roundTo(DType.F32, 1.0f + 0x1p-23f));
    }

    @Test
    void readsAndWritesUnalignedLittleEndian() {
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment s = arena.allocate(16).asSlice(1);
            FloatFormats.write(s, DType.BF16, 1, -2.0f);
            assertEquals((byte) 0xC0, s.get(java.lang.foreign.ValueLayout.JAVA_BYTE, 3));
            assertEquals(-2.0f, FloatFormats.read(s, DType.BF16, 1));
            FloatFormats.write(s, DType.F16, 0, 0.5f);
            assertEquals((byte) 0x38, s.get(java.lang.foreign.ValueLayout.JAVA_BYTE, 1));
            FloatFormats.write(s, DType.F32, 2, 1.25f);
            assertEquals(1.25f, FloatFormats.read(s, DType.F32, 2));
            assertEquals((byte) 0x3F, s.get(java.lang.foreign.ValueLayout.JAVA_BYTE, 11));
        }
    }
}
