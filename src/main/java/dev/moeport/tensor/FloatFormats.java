package dev.moeport.tensor;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;

/** TEMPORARY (replaced by the quant branch's version at merge). */
public final class FloatFormats {
    private static final ValueLayout.OfShort SHORT = ValueLayout.JAVA_SHORT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    private static final ValueLayout.OfFloat FLOAT = ValueLayout.JAVA_FLOAT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);

    private FloatFormats() {}

    public static float read(MemorySegment s, DType t, long i) {
        return switch (t) {
            case BF16 -> Float.intBitsToFloat(s.getAtIndex(SHORT, i) << 16);
            case F16 -> Float.float16ToFloat(s.getAtIndex(SHORT, i));
            case F32 -> s.getAtIndex(FLOAT, i);
            default -> throw new IllegalArgumentException(t.name());
        };
    }

    public static void write(MemorySegment s, DType t, long i, float v) {
        switch (t) {
            case BF16 -> s.setAtIndex(SHORT, i, floatToBf16(v));
            case F16 -> s.setAtIndex(SHORT, i, Float.floatToFloat16(v));
            case F32 -> s.setAtIndex(FLOAT, i, v);
            default -> throw new IllegalArgumentException(t.name());
        }
    }

    public static short floatToBf16(float v) {
        int bits = Float.floatToRawIntBits(v);
        if (Float.isNaN(v)) {
            return (short) ((bits >>> 16) | 0x40);
        }
        return (short) ((bits + 0x7FFF + ((bits >>> 16) & 1)) >>> 16);
    }
}
