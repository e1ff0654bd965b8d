package dev.moeport.quant;

import dev.moeport.tensor.DType;
import dev.moeport.tensor.FloatFormats;
import dev.moeport.tensor.Shape;
import java.lang.foreign.MemorySegment;

/**
 * The scalar numerics that both kernels share, each rule written once, as the spec states it: element
 * codes, block scales, E8M0 exponents, argument checks. The Panama kernel uses these for its tails and
 * rare cases, so its vector tricks are tested against exactly these definitions.
 */
final class QuantMath {
    /** The upper bounds of the E2M1 magnitudes 0, 0.5, 1, 1.5, 2, 3, 4 (6 is above the last). */
    private static final float[] E2M1_BOUNDS = {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5f};
    /** nvfp4 dequantizes through a table whose code 8 is +0.0 (mxfp4 keeps the sign: -0.0). */
    private static final float[] NVFP4_VALUES = new float[16];
    static final float NVFP4_MIN_BLOCK_SCALE = 0x1p-9f;
    /** The integer formats' code ranges (symmetric scales: amax / 127 and amax / 7; the codes -128 and -8 only by rounding). */
    static final int INT8_MIN = -128;
    static final int INT8_MAX = 127;
    static final int INT4_MIN = -8;
    static final int INT4_MAX = 7;

    static {
        for (int c = 0; c < 16; c++) {
            NVFP4_VALUES[c] = c == 8 ? 0.0f : FloatFormats.e2m1ToFloat(c);
        }
    }

    private QuantMath() {}

    private static int boundsBelow(float magnitude) {
        int n = 0;
        for (float b : E2M1_BOUNDS) {
            if (b < magnitude) {
                n++;
            }
        }
        return n;
    }

    /** nvfp4's E2M1 code: nearest, ties to even (0.75, 1.75 and 3.5 round up), sign only when x < 0. */
    static int nvfp4Code(float x) {
        float a = Math.abs(x);
        int n = boundsBelow(a);
        if (a == 0.75f || a == 1.75f || a == 3.5f) {
            n++;
        }
        return x < 0 ? n | 8 : n;
    }

    /** mxfp4's E2M1 code: ties toward zero, and the sign bit set unless x > 0 (zeros encode as 0x8). */
    static int mxfp4Code(float x) {
        int n = boundsBelow(Math.abs(x));
        return x > 0 ? n : n | 8;
    }

    /** nvfp4's E4M3 block scale from the block's amax and the tensor's {@code weight_scale_2}. */
    static byte nvfp4BlockScale(float blockAmax, float scale2) {
        float s = blockAmax / (FloatFormats.E2M1_MAX * scale2);
        if (s == 0) {
            s = 1.0f;
        }
        s = Math.min(Math.max(s, NVFP4_MIN_BLOCK_SCALE), FloatFormats.E4M3_MAX);
        return FloatFormats.floatToE4m3(s);
    }

    /** What nvfp4 divides a block's elements by: the product first, as the reference does. */
    static float nvfp4Divisor(byte blockScale, float scale2) {
        return FloatFormats.e4m3ToFloat(blockScale) * scale2;
    }

    static float nvfp4Value(int code) {
        return NVFP4_VALUES[code & 15];
    }

    /**
     * ceil(log2(y)) where log2 is the float32 logarithm, correctly rounded, of a finite y > 0. Not the
     * exact ceiling: just above a power of two, log2 rounds down to the integer (from 2^4 on, for
     * float32 inputs; never for BF16 or F16 ones), and the reference's scale then stays one lower.
     */
    static int ceilLog2(float y) {
        int bits = Float.floatToRawIntBits(y);
        int biased = bits >>> 23;
        int k;
        int fraction;
        int fractionBits;
        if (biased == 0) {
            int msb = 31 - Integer.numberOfLeadingZeros(bits);
            k = msb - 149;
            fraction = bits - (1 << msb);
            fractionBits = msb;
        } else {
            k = biased - 127;
            fraction = bits & 0x7FFFFF;
            fractionBits = 23;
        }
        if (fraction == 0) {
            return k;
        }
        // log2(y) = k + t with 0 < t < 1; it rounds to k when t is under half the float gap next to k
        // (towards zero for negative k). t is irrational, so no ties; double has ample precision here.
        double t = Math.log1p(Math.scalb((double) fraction, -fractionBits)) / Math.log(2);
        double halfGap = ((double) Math.nextUp((float) k) - k) / 2;
        return t < halfGap ? k : k + 1;
    }

    /** mxfp4's exponent: ceil(max(log2(amax / 6), -127)). */
    static int mxfp4Exponent(float blockAmax) {
        float y = blockAmax / FloatFormats.E2M1_MAX;
        return y == 0 ? -FloatFormats.E8M0_BIAS : Math.max(ceilLog2(y), -FloatFormats.E8M0_BIAS);
    }

    /** mxfp8's exponent: ceil(log2(amax / 448)) (-127 for a zero block), within [-127, 127]. */
    static int mxfp8Exponent(float blockAmax) {
        float y = blockAmax / FloatFormats.E4M3_MAX;
        return y == 0 ? -FloatFormats.E8M0_BIAS : Math.min(Math.max(ceilLog2(y), -FloatFormats.E8M0_BIAS), FloatFormats.E8M0_BIAS);
    }

    /** The E8M0 byte of exponent {@code e}. */
    static byte e8m0Byte(int e) {
        return (byte) (e + FloatFormats.E8M0_BIAS);
    }

    /** 2^e, exact for every E8M0 exponent (-127 gives a subnormal float). */
    static float pow2(int e) {
        return Math.scalb(1.0f, e);
    }

    /** round_half_even(v) clamped to [lo, hi]: the integer formats' element code. */
    static int intCode(float v, int lo, int hi) {
        return (int) Math.min(Math.max(Math.rint(v), lo), hi);
    }

    /**
     * Stores a dequantized value: a NaN as the canonical quiet NaN, since Java leaves a NaN's sign and
     * payload to the hardware (which operand of a product it keeps), and the two kernels must agree.
     */
    static void writeDequantized(MemorySegment dst, DType outType, long index, float value) {
        FloatFormats.write(dst, outType, index, Float.isNaN(value) ? Float.NaN : value);
    }

    /** An amax-derived scale where a zero becomes 1.0, as the reference guards its divisions. */
    static float nonZero(float scale) {
        return scale == 0 ? 1.0f : scale;
    }

    /** Throws at the first NaN or infinite element of {@code count} elements, if there is one. */
    static void requireFinite(MemorySegment src, DType dtype, long count) {
        for (long i = 0; i < count; i++) {
            if (!Float.isFinite(FloatFormats.read(src, dtype, i))) {
                throw new NonFiniteValueException(i);
            }
        }
    }

    /** Checks the arguments of {@link QuantKernel#amax}. */
    static void checkAmax(MemorySegment src, DType dtype, long count) {
        checkInput(dtype);
        if (count < 0) {
            throw new IllegalArgumentException("negative element count " + count);
        }
        requireBytes("src", src, dtype.byteSize(count));
    }

    /**
     * Checks the arguments of {@link QuantKernel#quantize}: sizes of every segment, a usable tensor
     * scale, and the one shape the formats cannot take: int4_g128 packs pairs of rows into bytes, so it
     * needs an even number of rows (its weight shape has {@code out / 2} rows).
     */
    static void checkQuantize(QuantFormat format, MemorySegment src, DType dtype, long rows, long cols,
                              float tensorScale, MemorySegment weight, MemorySegment scale) {
        checkInput(dtype);
        checkShape(rows, cols);
        if (format.packsRowPairs() && rows % 2 != 0) {
            throw new IllegalArgumentException(format.cliName() + " packs pairs of rows, so it needs an even number of rows, not " + rows);
        }
        if (format.usesTensorAmax() && !(tensorScale > 0 && tensorScale < Float.POSITIVE_INFINITY)) {
            throw new IllegalArgumentException(format.cliName() + " needs a positive finite tensor scale, not " + tensorScale
                    + " (an all-zero tensor has none)");
        }
        requireBytes("src", src, dtype.byteSize(rows * cols));
        Shape shape = Shape.of(rows, cols);
        requireBytes("weight", weight, format.weightType().byteSize(format.weightShape(shape).numel()));
        if (!format.scaleIsTensorScale()) {
            requireBytes("scale", scale, format.scaleType().byteSize(format.scaleShape(shape).numel()));
        }
    }

    /**
     * Whether {@link QuantKernel#dequantize} decodes the format; {@link DequantizedTensor} decodes the others
     * through the kernel's fp8 decoding or by itself.
     */
    static boolean kernelDecodes(QuantFormat format) {
        return switch (format) {
            case FP8, NVFP4, MXFP4, MXFP8 -> true;
            case FP8_PC, FP8_PB, INT8_WO, INT4_G128 -> false;
        };
    }

    /** Checks the arguments of {@link QuantKernel#dequantize}. */
    static void checkDequantize(QuantFormat format, MemorySegment weight, MemorySegment scale, long rows, long cols,
                                DType outType, MemorySegment dst) {
        if (!kernelDecodes(format)) {
            throw new UnsupportedOperationException("no dequantization for " + format.cliName());
        }
        if (outType != DType.BF16 && outType != DType.F32) {
            throw new IllegalArgumentException("dequantizes to BF16 or F32, not " + outType);
        }
        checkShape(rows, cols);
        Shape shape = Shape.of(rows, cols);
        requireBytes("weight", weight, format.weightType().byteSize(format.weightShape(shape).numel()));
        if (!format.scaleIsTensorScale()) {
            requireBytes("scale", scale, format.scaleType().byteSize(format.scaleShape(shape).numel()));
        }
        requireBytes("dst", dst, outType.byteSize(rows * cols));
    }

    private static void checkInput(DType dtype) {
        if (!FloatFormats.isSupported(dtype)) {
            throw new IllegalArgumentException("quantizes BF16, F16 or F32 weights, not " + dtype);
        }
    }

    private static void checkShape(long rows, long cols) {
        // Per-row scratch is indexed by int; no weight row is anywhere near 2^30 elements.
        if (rows < 0 || cols < 0 || cols > (1 << 30) || (cols > 0 && rows > Long.MAX_VALUE / 4 / cols)) {
            throw new IllegalArgumentException("bad chunk shape [" + rows + ", " + cols + "]");
        }
    }

    private static void requireBytes(String what, MemorySegment segment, long bytes) {
        if (segment.byteSize() < bytes) {
            throw new IllegalArgumentException(what + " has " + segment.byteSize() + " bytes, needs " + bytes);
        }
    }
}
