package dev.moeport.quant;

import dev.moeport.tensor.DType;
import dev.moeport.tensor.FloatFormats;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/**
 * The reference implementation: every format of {@code shared/spec/QUANT_FORMATS.md}, one element at a
 * time, in the spec's own words, so that it can be checked by reading. {@code PanamaQuantKernel} must
 * produce the same bytes; the tests compare the two on every rounding boundary.
 *
 * <p>Decisions the spec leaves open, shared by both implementations:
 * <ul>
 *   <li>{@code in} not a multiple of the block (nvfp4 16, mxfp4 and mxfp8 32, int4_g128 128, fp8_pb
 *       128 x 128): the row is zero-padded to whole blocks, as ModelOpt pads nvfp4, mxfp8 and fp8_pb.
 *       Scales always have the padded count ({@link QuantFormat#scaleShape}); the packed E2M1 weights
 *       of nvfp4 and mxfp4 keep the padded codes (mxfp4 encodes a zero as 0x8, so its padding is 0x8),
 *       the others are cropped back to {@code in}. fp8_pb pads rows as well: a last chunk of fewer than
 *       128 rows is a partial row of blocks.</li>
 *   <li>int4_g128 with an odd number of rows is refused ({@link IllegalArgumentException}): two rows
 *       share each byte and the weight shape has {@code out / 2} rows, so padding would need another
 *       shape and truncation would lose a row.</li>
 *   <li>fp8_pb's all-zero block: ModelOpt divides 0 by 0 and writes NaN codes; here its scale becomes
 *       1.0, as every other format's zero scale does, and its codes are zeros.</li>
 *   <li>fp8 and nvfp4 need a positive finite tensor scale; an all-zero tensor has none (ModelOpt
 *       asserts the same), and the caller decides what to do with it.</li>
 *   <li>A NaN or infinite input element throws {@link NonFiniteValueException} with the index of the
 *       first one in the chunk; the outputs are then unspecified (this kernel checks before writing,
 *       the Panama kernel finds out on the way).</li>
 *   <li>Dequantization follows ModelOpt's arithmetic: fp8 multiplies in the output dtype (the scale is
 *       rounded to it first); nvfp4 multiplies the code's value by the product of the two scales, with
 *       code 0x8 as +0.0; mxfp4 keeps it as -0.0; an E8M0 byte 0xFF (never written) is a NaN scale.
 *       A NaN result is written as the canonical quiet NaN (BF16 0x7FC0, F32 0x7FC00000).</li>
 * </ul>
 */
final class ScalarQuantKernel implements QuantKernel {
    private static final ValueLayout.OfByte BYTE = ValueLayout.JAVA_BYTE;

    ScalarQuantKernel() {}

    @Override
    public String name() {
        return "scalar";
    }

    @Override
    public String description() {
        return "scalar (no Vector API)";
    }

    @Override
    public float amax(MemorySegment src, DType dtype, long count) {
        QuantMath.checkAmax(src, dtype, count);
        float amax = 0;
        for (long i = 0; i < count; i++) {
            float v = FloatFormats.read(src, dtype, i);
            if (!Float.isFinite(v)) {
                throw new NonFiniteValueException(i);
            }
            amax = Math.max(amax, Math.abs(v));
        }
        return amax;
    }

    @Override
    public void quantize(QuantFormat format, MemorySegment src, DType dtype, long rows, long cols, float tensorScale,
                         MemorySegment weight, MemorySegment scale) {
        QuantMath.checkQuantize(format, src, dtype, rows, cols, tensorScale, weight, scale);
        QuantMath.requireFinite(src, dtype, rows * cols);
        Rows w = new Rows(src, dtype, rows, cols);
        switch (format) {
            case FP8 -> fp8(w, tensorScale, weight);
            case FP8_PC -> fp8PerChannel(w, weight, scale);
            case FP8_PB -> fp8PerBlock(w, weight, scale);
            case NVFP4 -> nvfp4(w, tensorScale, weight, scale);
            case MXFP4 -> mxfp4(w, weight, scale);
            case MXFP8 -> mxfp8(w, weight, scale);
            case INT8_WO -> int8(w, weight, scale);
            case INT4_G128 -> int4(w, weight, scale);
        }
    }

    /** The chunk's elements, zero outside it (the padding of partial blocks). */
    private record Rows(MemorySegment src, DType dtype, long rows, long cols) {
        float get(long r, long c) {
            return r < rows && c < cols ? FloatFormats.read(src, dtype, r * cols + c) : 0.0f;
        }

        float amax(long r, long c0, long n) {
            float amax = 0;
            for (long c = c0; c < c0 + n; c++) {
                amax = Math.max(amax, Math.abs(get(r, c)));
            }
            return amax;
        }
    }

    private static void fp8(Rows w, float scale, MemorySegment weight) {
        for (long r = 0; r < w.rows; r++) {
            for (long c = 0; c < w.cols; c++) {
                // PyTorch divides a BF16/F16 tensor by a 0-d f32 tensor in f32 and stores the input dtype.
                float x = FloatFormats.roundTo(w.dtype, w.get(r, c) / scale);
                weight.set(BYTE, r * w.cols + c, FloatFormats.floatToE4m3(x));
            }
        }
    }

    private static void fp8PerChannel(Rows w, MemorySegment weight, MemorySegment scale) {
        for (long r = 0; r < w.rows; r++) {
            float s = QuantMath.nonZero(w.amax(r, 0, w.cols) / FloatFormats.E4M3_MAX);
            scale.setAtIndex(FloatFormats.FLOAT_LE, r, s);
            for (long c = 0; c < w.cols; c++) {
                weight.set(BYTE, r * w.cols + c, FloatFormats.floatToE4m3(w.get(r, c) / s));
            }
        }
    }

    private static void fp8PerBlock(Rows w, MemorySegment weight, MemorySegment scale) {
        int block = QuantFormat.FP8_PB.blockSize();
        long colBlocks = (w.cols + block - 1) / block;
        for (long r0 = 0; r0 < w.rows; r0 += block) {
            for (long c0 = 0; c0 < w.cols; c0 += block) {
                float amax = 0;
                for (long r = r0; r < r0 + block; r++) {
                    amax = Math.max(amax, w.amax(r, c0, block));
                }
                // Scale and quotient are computed in the weight's own dtype.
                float s = QuantMath.nonZero(FloatFormats.roundTo(w.dtype, amax / FloatFormats.E4M3_MAX));
                scale.setAtIndex(FloatFormats.FLOAT_LE, r0 / block * colBlocks + c0 / block, s);
                for (long r = r0; r < Math.min(r0 + block, w.rows); r++) {
                    for (long c = c0; c < Math.min(c0 + block, w.cols); c++) {
                        float x = FloatFormats.roundTo(w.dtype, w.get(r, c) / s);
                        weight.set(BYTE, r * w.cols + c, FloatFormats.floatToE4m3(x));
                    }
                }
            }
        }
    }

    private static void nvfp4(Rows w, float scale2, MemorySegment weight, MemorySegment scale) {
        int block = QuantFormat.NVFP4.blockSize();
        long padded = QuantFormat.NVFP4.paddedIn(w.cols);
        for (long r = 0; r < w.rows; r++) {
            for (long c0 = 0; c0 < padded; c0 += block) {
                byte blockScale = QuantMath.nvfp4BlockScale(w.amax(r, c0, block), scale2);
                scale.set(BYTE, (r * padded + c0) / block, blockScale);
                float divisor = QuantMath.nvfp4Divisor(blockScale, scale2);
                for (long c = c0; c < c0 + block; c += 2) {
                    int lo = QuantMath.nvfp4Code(w.get(r, c) / divisor);
                    int hi = QuantMath.nvfp4Code(w.get(r, c + 1) / divisor);
                    weight.set(BYTE, (r * padded + c) / 2, (byte) (lo | hi << 4));
                }
            }
        }
    }

    private static void mxfp4(Rows w, MemorySegment weight, MemorySegment scale) {
        int block = QuantFormat.MXFP4.blockSize();
        long padded = QuantFormat.MXFP4.paddedIn(w.cols);
        for (long r = 0; r < w.rows; r++) {
            for (long c0 = 0; c0 < padded; c0 += block) {
                int e = QuantMath.mxfp4Exponent(w.amax(r, c0, block));
                scale.set(BYTE, (r * padded + c0) / block, QuantMath.e8m0Byte(e));
                float divisor = QuantMath.pow2(e);
                for (long c = c0; c < c0 + block; c += 2) {
                    int lo = QuantMath.mxfp4Code(w.get(r, c) / divisor);
                    int hi = QuantMath.mxfp4Code(w.get(r, c + 1) / divisor);
                    weight.set(BYTE, (r * padded + c) / 2, (byte) (lo | hi << 4));
                }
            }
        }
    }

    private static void mxfp8(Rows w, MemorySegment weight, MemorySegment scale) {
        int block = QuantFormat.MXFP8.blockSize();
        long padded = QuantFormat.MXFP8.paddedIn(w.cols);
        for (long r = 0; r < w.rows; r++) {
            for (long c0 = 0; c0 < padded; c0 += block) {
                int e = QuantMath.mxfp8Exponent(w.amax(r, c0, block));
                scale.set(BYTE, (r * padded + c0) / block, QuantMath.e8m0Byte(e));
                float multiplier = QuantMath.pow2(-e);
                for (long c = c0; c < Math.min(c0 + block, w.cols); c++) {
                    float x = Math.min(Math.max(w.get(r, c) * multiplier, -FloatFormats.E4M3_MAX), FloatFormats.E4M3_MAX);
                    weight.set(BYTE, r * w.cols + c, FloatFormats.floatToE4m3(x));
                }
            }
        }
    }

    private static void int8(Rows w, MemorySegment weight, MemorySegment scale) {
        for (long r = 0; r < w.rows; r++) {
            float s = QuantMath.nonZero(w.amax(r, 0, w.cols) / QuantFormat.INT8_WO.elementMax());
            scale.setAtIndex(FloatFormats.FLOAT_LE, r, s);
            for (long c = 0; c < w.cols; c++) {
                weight.set(BYTE, r * w.cols + c, (byte) QuantMath.intCode(w.get(r, c) / s, QuantMath.INT8_MIN, QuantMath.INT8_MAX));
            }
        }
    }

    private static void int4(Rows w, MemorySegment weight, MemorySegment scale) {
        int group = QuantFormat.INT4_G128.blockSize();
        long padded = QuantFormat.INT4_G128.paddedIn(w.cols);
        for (long r = 0; r < w.rows; r++) {
            for (long c0 = 0; c0 < padded; c0 += group) {
                float s = QuantMath.nonZero(w.amax(r, c0, group) / QuantFormat.INT4_G128.elementMax());
                scale.setAtIndex(FloatFormats.FLOAT_LE, (r * padded + c0) / group, s);
            }
        }
        // Rows 2k and 2k+1 share the bytes of packed row k: low nibble from the even row.
        for (long r = 0; r < w.rows; r += 2) {
            for (long c = 0; c < w.cols; c++) {
                long g = c / group;
                float s0 = scale.getAtIndex(FloatFormats.FLOAT_LE, r * (padded / group) + g);
                float s1 = scale.getAtIndex(FloatFormats.FLOAT_LE, (r + 1) * (padded / group) + g);
                int lo = QuantMath.intCode(w.get(r, c) / s0, QuantMath.INT4_MIN, QuantMath.INT4_MAX);
                int hi = QuantMath.intCode(w.get(r + 1, c) / s1, QuantMath.INT4_MIN, QuantMath.INT4_MAX);
                weight.set(BYTE, r / 2 * w.cols + c, (byte) ((lo & 0xF) | (hi & 0xF) << 4));
            }
        }
    }

    @Override
    public void dequantize(QuantFormat format, MemorySegment weight, MemorySegment scale, float tensorScale,
                           long rows, long cols, DType outType, MemorySegment dst) {
        QuantMath.checkDequantize(format, weight, scale, rows, cols, outType, dst);
        long padded = format.paddedIn(cols);
        int block = format.blockSize();
        float fp8Scale = FloatFormats.roundTo(outType, tensorScale);
        for (long r = 0; r < rows; r++) {
            for (long c = 0; c < cols; c++) {
                long blockIndex = block == 0 ? 0 : (r * padded + c) / block;
                float value = switch (format) {
                    case FP8 -> FloatFormats.e4m3ToFloat(weight.get(BYTE, r * cols + c)) * fp8Scale;
                    case NVFP4 -> QuantMath.nvfp4Value(nibble(weight, r * padded + c))
                            * QuantMath.nvfp4Divisor(scale.get(BYTE, blockIndex), tensorScale);
                    case MXFP4 -> FloatFormats.e2m1ToFloat(nibble(weight, r * padded + c))
                            * FloatFormats.e8m0ToFloat(scale.get(BYTE, blockIndex));
                    case MXFP8 -> FloatFormats.e4m3ToFloat(weight.get(BYTE, r * cols + c))
                            * FloatFormats.e8m0ToFloat(scale.get(BYTE, blockIndex));
                    case FP8_PC, FP8_PB, INT8_WO, INT4_G128 -> throw new AssertionError(format); // checked above: decoded outside the kernel
                };
                QuantMath.writeDequantized(dst, outType, r * cols + c, value);
            }
        }
    }

    /** The 4-bit code of element {@code i} of packed pairs: even elements in the low nibble. */
    private static int nibble(MemorySegment packed, long i) {
        int b = packed.get(BYTE, i / 2);
        return (i & 1) == 0 ? b & 0xF : (b >> 4) & 0xF;
    }
}
