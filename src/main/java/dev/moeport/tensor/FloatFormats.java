package dev.moeport.tensor;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;

/**
 * Conversions between float32 and the narrow float formats of checkpoints, bit-exact with PyTorch's CPU
 * conversions: BF16 and F16 (round to nearest, ties to even), OCP FP8 E4M3FN, E2M1 (FP4) and E8M0.
 * One place for these rules, so that dtype casting and every quantization kernel agree to the bit.
 *
 * <p>Element access reads and writes little-endian values at any byte offset: tensors are slices of
 * mapped safetensors files and need not be aligned.
 */
public final class FloatFormats {
    /** Largest finite E4M3FN value. */
    public static final float E4M3_MAX = 448.0f;
    /** Largest E2M1 value. */
    public static final float E2M1_MAX = 6.0f;
    /** The exponent bias of an E8M0 scale byte (as of a float's exponent field): byte = e + 127, e in [-127, 127]. */
    public static final int E8M0_BIAS = 127;
    /** Magnitudes of the E2M1 codes 0..7 (bit 3 is the sign). */
    private static final float[] E2M1 = {0f, 0.5f, 1f, 1.5f, 2f, 3f, 4f, 6f};
    private static final float[] E4M3_TO_FLOAT = new float[256];

    public static final ValueLayout.OfShort SHORT_LE = ValueLayout.JAVA_SHORT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    public static final ValueLayout.OfFloat FLOAT_LE = ValueLayout.JAVA_FLOAT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);

    // E4M3FN from f32 (PyTorch's c10 fp8_e4m3fn_from_fp32_value): magnitudes from 480 up (where
    // rounding would leave the format) are NaN; below 2^-6 the result is subnormal, a multiple of 2^-9,
    // found by one float addition that rounds to that grid.
    private static final int E4M3_NAN_FROM = 0x43F00000; // 480.0f
    private static final int E4M3_NORMAL_FROM = 0x3C800000; // 2^-6
    private static final float E4M3_SUBNORMAL_MAGIC = 16384.0f; // 2^14: its ulp is 2^-9

    static {
        for (int b = 0; b < 256; b++) {
            E4M3_TO_FLOAT[b] = decodeE4m3(b);
        }
    }

    private FloatFormats() {}

    /** The float of BF16 bits: exact (BF16 is the top half of a float). */
    public static float bf16ToFloat(short bits) {
        return Float.intBitsToFloat(bits << 16);
    }

    /** BF16 bits of {@code f}, rounded to nearest even; any NaN becomes the quiet NaN 0x7FC0, as in PyTorch. */
    public static short floatToBf16(float f) {
        if (Float.isNaN(f)) {
            return 0x7FC0;
        }
        int bits = Float.floatToRawIntBits(f);
        return (short) ((bits + 0x7FFF + ((bits >>> 16) & 1)) >>> 16);
    }

    public static float f16ToFloat(short bits) {
        return Float.float16ToFloat(bits);
    }

    /** F16 bits of {@code f}, rounded to nearest even (overflow to infinity). */
    public static short floatToF16(float f) {
        return Float.floatToFloat16(f);
    }

    /**
     * {@code f} rounded to the precision of {@code dtype} (BF16, F16 or F32), as a float: what PyTorch
     * computes when an f32 result is stored into a tensor of that dtype.
     */
    public static float roundTo(DType dtype, float f) {
        return switch (dtype) {
            case BF16 -> bf16ToFloat(floatToBf16(f));
            case F16 -> f16ToFloat(floatToF16(f));
            case F32 -> f;
            default -> throw unsupported(dtype);
        };
    }

    /**
     * The E4M3FN byte of {@code f}: round to nearest even, no saturation (a magnitude of 480 or more,
     * infinity or NaN gives NaN, 0x7F with the sign bit of {@code f}), subnormals down to 2^-9.
     */
    public static byte floatToE4m3(float f) {
        int bits = Float.floatToRawIntBits(f);
        int sign = (bits >>> 24) & 0x80;
        int abs = bits & 0x7FFFFFFF;
        int code;
        if (abs >= E4M3_NAN_FROM) {
            code = 0x7F;
        } else if (abs < E4M3_NORMAL_FROM) {
            code = Float.floatToRawIntBits(Float.intBitsToFloat(abs) + E4M3_SUBNORMAL_MAGIC)
                    - Float.floatToRawIntBits(E4M3_SUBNORMAL_MAGIC);
        } else {
            // Rebias the exponent (127 -> 7), then round the mantissa from 23 to 3 bits, ties to even.
            code = (abs - ((127 - 7) << 23) + 0x7FFFF + ((abs >>> 20) & 1)) >>> 20;
        }
        return (byte) (code | sign);
    }

    /** The float of an E4M3FN byte; 0x7F and 0xFF are NaN. */
    public static float e4m3ToFloat(byte b) {
        return E4M3_TO_FLOAT[b & 0xFF];
    }

    private static float decodeE4m3(int b) {
        int exp = (b >>> 3) & 0xF;
        int mant = b & 7;
        float magnitude;
        if ((b & 0x7F) == 0x7F) {
            magnitude = Float.NaN;
        } else if (exp == 0) {
            magnitude = Math.scalb((float) mant, -9);
        } else {
            magnitude = Math.scalb(1.0f + mant / 8.0f, exp - 7);
        }
        return (b & 0x80) != 0 ? -magnitude : magnitude;
    }

    /** The float of a 4-bit E2M1 code (bit 3 the sign, so 0x8 is -0.0). */
    public static float e2m1ToFloat(int code) {
        float magnitude = E2M1[code & 7];
        return (code & 8) != 0 ? -magnitude : magnitude;
    }

    /** The scale 2^(b - 127) of an E8M0 byte; 0xFF is NaN. */
    public static float e8m0ToFloat(int b) {
        int e = b & 0xFF;
        // The byte is a float's exponent field; 0 is below the normal range: 2^-127, a subnormal.
        return e == 0xFF ? Float.NaN : e == 0 ? 0x1p-127f : Float.intBitsToFloat(e << 23);
    }

    /** Element {@code index} of a BF16, F16 or F32 segment, as a float (exact). */
    public static float read(MemorySegment segment, DType dtype, long index) {
        return switch (dtype) {
            case BF16 -> bf16ToFloat(segment.getAtIndex(SHORT_LE, index));
            case F16 -> f16ToFloat(segment.getAtIndex(SHORT_LE, index));
            case F32 -> segment.getAtIndex(FLOAT_LE, index);
            default -> throw unsupported(dtype);
        };
    }

    /** Stores {@code value} as element {@code index} of a BF16, F16 or F32 segment, rounded to nearest even. */
    public static void write(MemorySegment segment, DType dtype, long index, float value) {
        switch (dtype) {
            case BF16 -> segment.setAtIndex(SHORT_LE, index, floatToBf16(value));
            case F16 -> segment.setAtIndex(SHORT_LE, index, floatToF16(value));
            case F32 -> segment.setAtIndex(FLOAT_LE, index, value);
            default -> throw unsupported(dtype);
        }
    }

    /** Whether {@link #read} and {@link #write} handle {@code dtype}. */
    public static boolean isSupported(DType dtype) {
        return dtype == DType.BF16 || dtype == DType.F16 || dtype == DType.F32;
    }

    private static IllegalArgumentException unsupported(DType dtype) {
        return new IllegalArgumentException("expected BF16, F16 or F32 elements, not " + dtype);
    }
}
