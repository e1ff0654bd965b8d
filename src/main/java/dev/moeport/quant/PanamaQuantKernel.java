package dev.moeport.quant;

import static java.nio.ByteOrder.LITTLE_ENDIAN;

import dev.moeport.tensor.DType;
import dev.moeport.tensor.FloatFormats;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import jdk.incubator.vector.ByteVector;
import jdk.incubator.vector.FloatVector;
import jdk.incubator.vector.IntVector;
import jdk.incubator.vector.ShortVector;
import jdk.incubator.vector.VectorMask;
import jdk.incubator.vector.VectorOperators;
import jdk.incubator.vector.VectorShape;
import jdk.incubator.vector.VectorSpecies;

/**
 * The Vector API implementation of {@link ScalarQuantKernel}'s arithmetic, byte for byte (the split
 * of Apache Lucene's VectorizationProvider: one interface, a scalar reference, a Panama implementation
 * loaded only when the incubator module is present). The per-element rules become branch-free lane
 * arithmetic on float bits: E4M3 and E2M1 rounding by integer add-and-shift with a float addition for
 * the subnormal grid, BF16 widening by a shift, E2M1 decoding by a table lookup in registers. Real
 * divisions stay divisions (the reference divides, and a reciprocal would round differently); only the
 * E8M0 scales, powers of two, become multiplications, which round identically.
 *
 * <p>Block formats work row by row in steps: the amax of every block (one reduction each), then all
 * the row's block scales as vectors, then the elements with each block's divisor broadcast (the E2M1
 * formats write one code per byte to a scratch row, then pack pairs of bytes into nibbles). The
 * remainder of a row that does not fill a vector (and the padding of a last partial block) goes
 * through {@link QuantMath}'s scalar definitions.
 *
 * <p>Non-finite inputs are found on the way, from the integer maximum of the magnitudes' bits (NaN and
 * infinity compare above every finite value), and the chunk is then rescanned in order so that the
 * index reported is the first, as the scalar kernel reports it; outputs already written are garbage.
 *
 * <p>Vectors of 256 or 512 bits: 8 or 16 float lanes divide every block size. Wider hardware uses 512
 * bits; narrower hardware (128-bit NEON) is refused, and {@link QuantKernels} falls back to the scalar
 * kernel.
 */
final class PanamaQuantKernel implements QuantKernel {
    private static final VectorSpecies<Float> F = floatSpecies();
    private static final int N = F.length();
    private static final VectorSpecies<Integer> I = F.withLanes(int.class);
    /** N 16-bit lanes: one BF16/F16 load per float vector. */
    private static final VectorSpecies<Short> S = VectorSpecies.of(short.class, VectorShape.forBitSize(F.vectorBitSize() / 2));
    /** N byte lanes: one byte per float lane on the way out. */
    private static final VectorSpecies<Byte> B = VectorSpecies.of(byte.class, VectorShape.forBitSize(F.vectorBitSize() / 4));
    /** Full-width 16-bit lanes for the long amax scan. */
    private static final VectorSpecies<Short> SW = VectorSpecies.of(short.class, F.vectorShape());

    private static final ValueLayout.OfByte BYTE = ValueLayout.JAVA_BYTE;
    private static final int INF_BITS = 0x7F800000;
    private static final int ABS_MASK = 0x7FFFFFFF;
    /** N/2 bytes, for packing the codes of pairs of 16-bit lanes into the bytes they fill. */
    private static final VectorSpecies<Byte> BW = VectorSpecies.of(byte.class, VectorShape.forBitSize(F.vectorBitSize() / 2));
    /** Lane i takes byte i/2 of a vector of packed bytes (LO: the first N/2 bytes, HI: the next N/2). */
    private static final IntVector UNPACK_LO = IntVector.fromArray(I, halves(0), 0);
    private static final IntVector UNPACK_HI = IntVector.fromArray(I, halves(N / 2), 0);
    private static final IntVector NIBBLE_SHIFT = IntVector.fromArray(I, nibbleShifts(), 0);
    /** E2M1 values by code, as float bits in two vectors (N is 8 or 16: 16 codes fit in 2N lanes). */
    private static final IntVector[] NVFP4_TABLE = table(QuantMath::nvfp4Value);
    private static final IntVector[] MXFP4_TABLE = table(FloatFormats::e2m1ToFloat);
    /** E8M0 exponents: fractions above this cannot round log2 down to the integer (see QuantMath.ceilLog2). */
    private static final int LOG2_SAFE_FRACTION = 32;

    PanamaQuantKernel() {
        if (F.vectorBitSize() < 256 || FloatVector.SPECIES_PREFERRED.vectorBitSize() < 256) {
            throw new UnsupportedOperationException("the vector kernels need 256-bit vectors, this CPU has "
                    + FloatVector.SPECIES_PREFERRED.vectorBitSize() + "-bit ones");
        }
    }

    private static VectorSpecies<Float> floatSpecies() {
        int bits = FloatVector.SPECIES_PREFERRED.vectorBitSize();
        return bits >= 512 ? FloatVector.SPECIES_512 : FloatVector.SPECIES_256;
    }

    @Override
    public String name() {
        return "panama";
    }

    @Override
    public String toString() {
        return "panama (" + F.vectorBitSize() + "-bit vectors)";
    }

    // ---------------------------------------------------------------------------------------------
    // amax

    @Override
    public float amax(MemorySegment src, DType dtype, long count) {
        QuantMath.checkAmax(src, dtype, count);
        int bits = rangeMaxBits(src, dtype, 0, count);
        if (bits >= INF_BITS) {
            QuantMath.requireFinite(src, dtype, count);
        }
        return Float.intBitsToFloat(bits);
    }

    /** The f32 bits of max |x| over {@code count} elements from {@code start}; at least INF_BITS if one is not finite. */
    private static int rangeMaxBits(MemorySegment src, DType dtype, long start, long count) {
        long i = 0;
        int raw = 0;
        if (dtype == DType.F32) {
            IntVector m0 = IntVector.zero(I);
            IntVector m1 = m0;
            for (; i + 2L * N <= count; i += 2L * N) {
                m0 = m0.max(IntVector.fromMemorySegment(I, src, (start + i) * 4, LITTLE_ENDIAN).and(ABS_MASK));
                m1 = m1.max(IntVector.fromMemorySegment(I, src, (start + i + N) * 4, LITTLE_ENDIAN).and(ABS_MASK));
            }
            raw = m0.max(m1).reduceLanes(VectorOperators.MAX);
        } else {
            int lanes = SW.length();
            ShortVector m0 = ShortVector.zero(SW);
            ShortVector m1 = m0;
            for (; i + 2L * lanes <= count; i += 2L * lanes) {
                m0 = m0.max(ShortVector.fromMemorySegment(SW, src, (start + i) * 2, LITTLE_ENDIAN).and((short) 0x7FFF));
                m1 = m1.max(ShortVector.fromMemorySegment(SW, src, (start + i + lanes) * 2, LITTLE_ENDIAN).and((short) 0x7FFF));
            }
            raw = m0.max(m1).reduceLanes(VectorOperators.MAX);
        }
        int bits = rawToFloatBits(dtype, raw);
        for (; i < count; i++) {
            bits = Math.max(bits, Float.floatToRawIntBits(Math.abs(FloatFormats.read(src, dtype, start + i))) & ABS_MASK);
        }
        return bits;
    }

    /**
     * The f32 bits of a magnitude given as the source dtype's bits (16-bit ones zero-extended), the
     * order kept: non-finite ones map to at least INF_BITS.
     */
    private static int rawToFloatBits(DType dtype, int raw) {
        return switch (dtype) {
            case BF16 -> (raw & 0xFFFF) << 16;
            case F16 -> (raw & 0xFFFF) >= 0x7C00 ? INF_BITS : Float.floatToRawIntBits(Float.float16ToFloat((short) raw));
            default -> raw;
        };
    }

    /**
     * Each block's amax of one row into {@code amax}, blocks of {@code block} elements, the last one
     * possibly partial (its missing elements are the zero padding).
     */
    private static void blockAmax(MemorySegment src, DType dtype, long chunkCount, long rowStart, int cols, int block,
                                  float[] amax) {
        int full = cols / block;
        int worst = rawToFloatBits(dtype, dtype == DType.F32
                ? blockAmax32(src, rowStart, full, block, amax)
                : blockAmax16(src, dtype, rowStart, full, block, amax));
        if (full * block < cols) {
            int bits = rangeMaxBits(src, dtype, rowStart + (long) full * block, cols - full * block);
            worst = Math.max(worst, bits);
            amax[full] = Float.intBitsToFloat(bits);
        }
        if (worst >= INF_BITS) {
            QuantMath.requireFinite(src, dtype, chunkCount);
        }
    }

    /** {@link #blockAmax} of whole BF16/F16 blocks (block a multiple of N): the largest magnitude's bits. */
    private static int blockAmax16(MemorySegment src, DType dtype, long start, int blocks, int block, float[] amax) {
        int worst = 0;
        for (int b = 0; b < blocks; b++) {
            long offset = (start + (long) b * block) * 2;
            ShortVector m = ShortVector.fromMemorySegment(S, src, offset, LITTLE_ENDIAN).and((short) 0x7FFF);
            for (int k = N; k < block; k += N) {
                m = m.max(ShortVector.fromMemorySegment(S, src, offset + 2L * k, LITTLE_ENDIAN).and((short) 0x7FFF));
            }
            int raw = m.reduceLanes(VectorOperators.MAX);
            worst = Math.max(worst, raw);
            amax[b] = Float.intBitsToFloat(rawToFloatBits(dtype, raw));
        }
        return worst;
    }

    /** {@link #blockAmax} of whole F32 blocks (block a multiple of N): the largest magnitude's bits. */
    private static int blockAmax32(MemorySegment src, long start, int blocks, int block, float[] amax) {
        int worst = 0;
        for (int b = 0; b < blocks; b++) {
            long offset = (start + (long) b * block) * 4;
            IntVector m = IntVector.fromMemorySegment(I, src, offset, LITTLE_ENDIAN).and(ABS_MASK);
            for (int k = N; k < block; k += N) {
                m = m.max(IntVector.fromMemorySegment(I, src, offset + 4L * k, LITTLE_ENDIAN).and(ABS_MASK));
            }
            int raw = m.reduceLanes(VectorOperators.MAX);
            worst = Math.max(worst, raw);
            amax[b] = Float.intBitsToFloat(raw);
        }
        return worst;
    }

    // ---------------------------------------------------------------------------------------------
    // quantize

    @Override
    public void quantize(QuantFormat format, MemorySegment src, DType dtype, long rows, long cols, float tensorScale,
                         MemorySegment weight, MemorySegment scale) {
        QuantMath.checkQuantize(format, src, dtype, rows, cols, tensorScale, weight, scale);
        int c = (int) cols;
        switch (format) {
            case FP8 -> fp8Span(src, dtype, rows * cols, 0, rows * cols, tensorScale, true, weight);
            case FP8_PC -> fp8PerChannel(src, dtype, rows, c, weight, scale);
            case FP8_PB -> fp8PerBlock(src, dtype, rows, c, weight, scale);
            case NVFP4 -> nvfp4(src, dtype, rows, c, tensorScale, weight, scale);
            case MXFP4 -> mxfp4(src, dtype, rows, c, weight, scale);
            case MXFP8 -> mxfp8(src, dtype, rows, c, weight, scale);
            case INT8_WO -> int8(src, dtype, rows, c, weight, scale);
            case INT4_G128 -> int4(src, dtype, rows, c, weight, scale);
        }
    }

    /**
     * E4M3 codes of {@code x / divisor} for {@code count} elements from {@code start} (the same
     * indices in src and weight), the quotient first rounded to the input dtype when {@code round}.
     */
    private static void fp8Span(MemorySegment src, DType dtype, long chunkCount, long start, long count, float divisor,
                                boolean round, MemorySegment weight) {
        IntVector worst = IntVector.zero(I);
        long i = 0;
        for (; i + N <= count; i += N) {
            FloatVector w = load(src, dtype, start + i);
            worst = worst.max(w.reinterpretAsInts().and(ABS_MASK));
            FloatVector x = w.div(divisor);
            storeBytes(e4m3(round ? roundForE4m3(dtype, x) : x, false), weight, start + i);
        }
        if (worst.reduceLanes(VectorOperators.MAX) >= INF_BITS) {
            QuantMath.requireFinite(src, dtype, chunkCount);
        }
        for (; i < count; i++) {
            float w = FloatFormats.read(src, dtype, start + i);
            if (!Float.isFinite(w)) {
                QuantMath.requireFinite(src, dtype, chunkCount);
            }
            float x = w / divisor;
            weight.set(BYTE, start + i, FloatFormats.floatToE4m3(round ? FloatFormats.roundTo(dtype, x) : x));
        }
    }

    private static void fp8PerChannel(MemorySegment src, DType dtype, long rows, int cols, MemorySegment weight,
                                      MemorySegment scale) {
        for (long r = 0; r < rows; r++) {
            int bits = rangeMaxBits(src, dtype, r * cols, cols);
            if (bits >= INF_BITS) {
                QuantMath.requireFinite(src, dtype, rows * cols);
            }
            float s = QuantMath.nonZero(Float.intBitsToFloat(bits) / FloatFormats.E4M3_MAX);
            scale.setAtIndex(FloatFormats.FLOAT_LE, r, s);
            fp8Span(src, dtype, rows * cols, r * cols, cols, s, false, weight);
        }
    }

    private static void fp8PerBlock(MemorySegment src, DType dtype, long rows, int cols, MemorySegment weight,
                                    MemorySegment scale) {
        int block = QuantFormat.FP8_PB.blockSize();
        int colBlocks = (cols + block - 1) / block;
        for (long r0 = 0; r0 < rows; r0 += block) {
            long bandRows = Math.min(block, rows - r0);
            for (int c0 = 0; c0 < cols; c0 += block) {
                int width = Math.min(block, cols - c0);
                int bits = 0;
                for (long r = r0; r < r0 + bandRows; r++) {
                    bits = Math.max(bits, rangeMaxBits(src, dtype, r * cols + c0, width));
                }
                if (bits >= INF_BITS) {
                    QuantMath.requireFinite(src, dtype, rows * cols);
                }
                float s = QuantMath.nonZero(FloatFormats.roundTo(dtype, Float.intBitsToFloat(bits) / FloatFormats.E4M3_MAX));
                scale.setAtIndex(FloatFormats.FLOAT_LE, r0 / block * colBlocks + c0 / block, s);
                for (long r = r0; r < r0 + bandRows; r++) {
                    fp8Span(src, dtype, rows * cols, r * cols + c0, width, s, true, weight);
                }
            }
        }
    }

    // The block formats run row by row, each step in a method of its own: one method holding all three
    // loops grows past C2's inlining budget (NodeCountInliningCutoff), and a Vector API call left
    // out of line boxes its vectors, several times slower.

    private static void nvfp4(MemorySegment src, DType dtype, long rows, int cols, float scale2, MemorySegment weight,
                              MemorySegment scale) {
        int padded = (int) QuantFormat.NVFP4.paddedIn(cols);
        int blocks = padded / QuantFormat.NVFP4.blockSize();
        float[] amax = new float[blocks];
        float[] divisor = new float[blocks];
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment codes = codeScratch(arena, padded);
            for (long r = 0; r < rows; r++) {
                blockAmax(src, dtype, rows * cols, r * cols, cols, QuantFormat.NVFP4.blockSize(), amax);
                nvfp4Scales(amax, blocks, scale2, scale, r * blocks, divisor);
                nvfp4Codes(src, dtype, r * cols, cols, divisor, codes);
                packNibbles(codes, padded, weight, r * padded / 2);
            }
        }
    }

    /** A row's E4M3 block scales, and what each block's elements are divided by. */
    private static void nvfp4Scales(float[] amax, int blocks, float scale2, MemorySegment scale, long scaleIndex,
                                    float[] divisor) {
        float scaleDivisor = 6.0f * scale2;
        int b = 0;
        for (; b + N <= blocks; b += N) {
            FloatVector s = FloatVector.fromArray(F, amax, b).div(scaleDivisor);
            s = s.blend(1.0f, s.eq(0.0f)).max(QuantMath.NVFP4_MIN_BLOCK_SCALE).min(FloatFormats.E4M3_MAX);
            IntVector codes = e4m3(s, false);
            storeBytes(codes, scale, scaleIndex + b);
            decodeE4m3(codes).mul(scale2).intoArray(divisor, b);
        }
        for (; b < blocks; b++) {
            byte s = QuantMath.nvfp4BlockScale(amax[b], scale2);
            scale.set(BYTE, scaleIndex + b, s);
            divisor[b] = QuantMath.nvfp4Divisor(s, scale2);
        }
    }

    /**
     * A row's worth of E2M1 codes, one per byte, before packing. Native memory: vector stores into a
     * heap segment, or a store site that sees both kinds, run several times slower.
     */
    private static MemorySegment codeScratch(Arena arena, int padded) {
        return arena.allocate(padded, 64);
    }

    /** A row's E2M1 codes, one per byte of {@code codes}, padding included. */
    private static void nvfp4Codes(MemorySegment src, DType dtype, long row, int cols, float[] divisor,
                                   MemorySegment codes) {
        int block = QuantFormat.NVFP4.blockSize();
        int c = 0;
        for (; c + N <= cols; c += N) {
            storeBytes(nvfp4Codes(load(src, dtype, row + c).div(divisor[c / block])), codes, c);
        }
        fp4TailCodes(true, src, dtype, row, cols, c, divisor, codes);
    }

    private static void mxfp4(MemorySegment src, DType dtype, long rows, int cols, MemorySegment weight,
                              MemorySegment scale) {
        int padded = (int) QuantFormat.MXFP4.paddedIn(cols);
        int blocks = padded / QuantFormat.MXFP4.blockSize();
        float[] amax = new float[blocks];
        float[] multiplier = new float[blocks];
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment codes = codeScratch(arena, padded);
            for (long r = 0; r < rows; r++) {
                blockAmax(src, dtype, rows * cols, r * cols, cols, QuantFormat.MXFP4.blockSize(), amax);
                e8m0Scales(amax, blocks, 6.0f, false, scale, r * blocks, multiplier);
                mxfp4Codes(src, dtype, r * cols, cols, multiplier, codes);
                packNibbles(codes, padded, weight, r * padded / 2);
            }
        }
    }

    private static void mxfp4Codes(MemorySegment src, DType dtype, long row, int cols, float[] multiplier,
                                   MemorySegment codes) {
        int block = QuantFormat.MXFP4.blockSize();
        int c = 0;
        for (; c + N <= cols; c += N) {
            // The multiplier is 2^-e: the product is the correctly rounded quotient by 2^e.
            storeBytes(mxfp4Codes(load(src, dtype, row + c).mul(multiplier[c / block])), codes, c);
        }
        fp4TailCodes(false, src, dtype, row, cols, c, multiplier, codes);
    }

    /** Codes two per byte, even elements in the low nibble: each 16-bit lane holds a pair. */
    private static void packNibbles(MemorySegment codes, int count, MemorySegment weight, long out) {
        int lanes = SW.length();
        int i = 0;
        for (; 2 * (i + lanes) <= count; i += lanes) {
            ShortVector pair = ShortVector.fromMemorySegment(SW, codes, 2L * i, LITTLE_ENDIAN);
            pair.or(pair.lanewise(VectorOperators.LSHR, 4)).convertShape(VectorOperators.S2B, BW, 0).reinterpretAsBytes()
                    .intoMemorySegment(weight, out + i, LITTLE_ENDIAN);
        }
        for (; 2 * i < count; i++) {
            weight.set(BYTE, out + i, (byte) (codes.get(BYTE, 2L * i) | codes.get(BYTE, 2L * i + 1) << 4));
        }
    }

    /**
     * The codes of a row from element {@code c} on, padding included: nvfp4 divides by its block's
     * divisor, mxfp4 multiplies by its block's 2^-e.
     */
    private static void fp4TailCodes(boolean nvfp4, MemorySegment src, DType dtype, long row, int cols, int c,
                                     float[] factor, MemorySegment codes) {
        QuantFormat format = nvfp4 ? QuantFormat.NVFP4 : QuantFormat.MXFP4;
        int block = format.blockSize();
        for (int padded = (int) format.paddedIn(cols); c < padded; c++) {
            float x = element(src, dtype, row, cols, c);
            float f = factor[c / block];
            codes.set(BYTE, c, (byte) (nvfp4 ? QuantMath.nvfp4Code(x / f) : QuantMath.mxfp4Code(x * f)));
        }
    }

    private static void mxfp8(MemorySegment src, DType dtype, long rows, int cols, MemorySegment weight,
                              MemorySegment scale) {
        int blocks = (int) QuantFormat.MXFP8.paddedIn(cols) / QuantFormat.MXFP8.blockSize();
        float[] amax = new float[blocks];
        float[] multiplier = new float[blocks];
        for (long r = 0; r < rows; r++) {
            blockAmax(src, dtype, rows * cols, r * cols, cols, QuantFormat.MXFP8.blockSize(), amax);
            e8m0Scales(amax, blocks, FloatFormats.E4M3_MAX, true, scale, r * blocks, multiplier);
            mxfp8Row(src, dtype, r * cols, cols, multiplier, weight);
        }
    }

    private static void mxfp8Row(MemorySegment src, DType dtype, long row, int cols, float[] multiplier,
                                 MemorySegment weight) {
        int block = QuantFormat.MXFP8.blockSize();
        int c = 0;
        for (; c + N <= cols; c += N) {
            storeBytes(e4m3(load(src, dtype, row + c).mul(multiplier[c / block]), true), weight, row + c);
        }
        for (; c < cols; c++) {
            float x = element(src, dtype, row, cols, c) * multiplier[c / block];
            x = Math.min(Math.max(x, -FloatFormats.E4M3_MAX), FloatFormats.E4M3_MAX);
            weight.set(BYTE, row + c, FloatFormats.floatToE4m3(x));
        }
    }

    /**
     * mxfp4's (divide by 6, no upper clamp) or mxfp8's (divide by 448, clamped to 127) E8M0 exponents
     * of a row's blocks: the scale bytes, and 2^-e into {@code multiplier}. The vector path takes
     * ceil(log2 y) from the float bits; the lanes where the float log2 could round down to the
     * integer (a tiny fraction, or a subnormal y) are recomputed by {@link QuantMath}.
     */
    private static void e8m0Scales(float[] amax, int blocks, float divisor, boolean mxfp8, MemorySegment scale,
                                   long scaleIndex, float[] multiplier) {
        int b = 0;
        for (; b + N <= blocks; b += N) {
            FloatVector y = FloatVector.fromArray(F, amax, b).div(divisor);
            IntVector bits = y.reinterpretAsInts();
            IntVector biased = bits.lanewise(VectorOperators.LSHR, 23);
            IntVector fraction = bits.and(0x7FFFFF);
            IntVector e = biased.sub(127).add(1, fraction.compare(VectorOperators.NE, 0));
            e = e.blend(-127, bits.compare(VectorOperators.EQ, 0));
            VectorMask<Integer> rare = biased.compare(VectorOperators.EQ, 0).and(bits.compare(VectorOperators.NE, 0))
                    .or(fraction.compare(VectorOperators.NE, 0).and(fraction.compare(VectorOperators.LT, LOG2_SAFE_FRACTION)));
            if (rare.anyTrue()) {
                int[] lanes = e.toArray();
                for (int k = 0; k < N; k++) {
                    lanes[k] = mxfp8 ? QuantMath.mxfp8Exponent(amax[b + k]) : QuantMath.mxfp4Exponent(amax[b + k]);
                }
                e = IntVector.fromArray(I, lanes, 0);
            }
            e = e.max(-127);
            if (mxfp8) {
                e = e.min(127);
            }
            storeBytes(e.add(127), scale, scaleIndex + b);
            // 2^-e is a normal float: e <= 126 for any finite amax.
            IntVector.broadcast(I, 127).sub(e).lanewise(VectorOperators.LSHL, 23).reinterpretAsFloats().intoArray(multiplier, b);
        }
        for (; b < blocks; b++) {
            int e = mxfp8 ? QuantMath.mxfp8Exponent(amax[b]) : QuantMath.mxfp4Exponent(amax[b]);
            scale.set(BYTE, scaleIndex + b, (byte) (e + 127));
            multiplier[b] = QuantMath.pow2(-e);
        }
    }

    private static void int8(MemorySegment src, DType dtype, long rows, int cols, MemorySegment weight,
                             MemorySegment scale) {
        for (long r = 0; r < rows; r++) {
            long row = r * cols;
            int bits = rangeMaxBits(src, dtype, row, cols);
            if (bits >= INF_BITS) {
                QuantMath.requireFinite(src, dtype, rows * cols);
            }
            float s = QuantMath.nonZero(Float.intBitsToFloat(bits) / 127.0f);
            scale.setAtIndex(FloatFormats.FLOAT_LE, r, s);
            int c = 0;
            for (; c + N <= cols; c += N) {
                storeBytes(intCodes(load(src, dtype, row + c).div(s), -128, 127), weight, row + c);
            }
            for (; c < cols; c++) {
                weight.set(BYTE, row + c, (byte) QuantMath.intCode(element(src, dtype, row, cols, c) / s, -128, 127));
            }
        }
    }

    private static void int4(MemorySegment src, DType dtype, long rows, int cols, MemorySegment weight,
                             MemorySegment scale) {
        int group = QuantFormat.INT4_G128.blockSize();
        int groups = (int) QuantFormat.INT4_G128.paddedIn(cols) / group;
        float[] amax = new float[groups];
        float[] s0 = new float[groups];
        float[] s1 = new float[groups];
        for (long r = 0; r < rows; r += 2) {
            for (int k = 0; k < 2; k++) {
                float[] s = k == 0 ? s0 : s1;
                blockAmax(src, dtype, rows * cols, (r + k) * cols, cols, group, amax);
                for (int g = 0; g < groups; g++) {
                    s[g] = QuantMath.nonZero(amax[g] / 7.0f);
                    scale.setAtIndex(FloatFormats.FLOAT_LE, (r + k) * groups + g, s[g]);
                }
            }
            int4Rows(src, dtype, r * cols, cols, s0, s1, weight, r / 2 * cols);
        }
    }

    /** Two rows' codes, from {@code row} and the next, packed into one row of bytes: low nibble from the first. */
    private static void int4Rows(MemorySegment src, DType dtype, long row, int cols, float[] s0, float[] s1,
                                 MemorySegment weight, long out) {
        int group = QuantFormat.INT4_G128.blockSize();
        int c = 0;
        for (; c + N <= cols; c += N) {
            IntVector lo = intCodes(load(src, dtype, row + c).div(s0[c / group]), -8, 7).and(0xF);
            IntVector hi = intCodes(load(src, dtype, row + cols + c).div(s1[c / group]), -8, 7).and(0xF);
            storeBytes(lo.or(hi.lanewise(VectorOperators.LSHL, 4)), weight, out + c);
        }
        for (; c < cols; c++) {
            int lo = QuantMath.intCode(element(src, dtype, row, cols, c) / s0[c / group], -8, 7);
            int hi = QuantMath.intCode(element(src, dtype, row + cols, cols, c) / s1[c / group], -8, 7);
            weight.set(BYTE, out + c, (byte) ((lo & 0xF) | (hi & 0xF) << 4));
        }
    }

    /** Element {@code c} of a row, zero in the padding past {@code cols}. */
    private static float element(MemorySegment src, DType dtype, long row, int cols, int c) {
        return c < cols ? FloatFormats.read(src, dtype, row + c) : 0.0f;
    }

    // ---------------------------------------------------------------------------------------------
    // dequantize

    @Override
    public void dequantize(QuantFormat format, MemorySegment weight, MemorySegment scale, float tensorScale,
                           long rows, long cols, DType outType, MemorySegment dst) {
        QuantMath.checkDequantize(format, weight, scale, rows, cols, outType, dst);
        int c = (int) cols;
        switch (format) {
            case FP8 -> fp8Dequantize(weight, FloatFormats.roundTo(outType, tensorScale), rows * cols, outType, dst);
            case MXFP8 -> mxfp8Dequantize(weight, scale, rows, c, outType, dst);
            case NVFP4, MXFP4 -> fp4Dequantize(format, weight, scale, tensorScale, rows, c, outType, dst);
            default -> throw new AssertionError(format);
        }
    }

    private static void fp8Dequantize(MemorySegment weight, float scale, long count, DType outType, MemorySegment dst) {
        long i = 0;
        for (; i + N <= count; i += N) {
            store(decodeE4m3(loadBytes(weight, i)).mul(scale), outType, dst, i);
        }
        for (; i < count; i++) {
            FloatFormats.write(dst, outType, i, FloatFormats.e4m3ToFloat(weight.get(BYTE, i)) * scale);
        }
    }

    private static void mxfp8Dequantize(MemorySegment weight, MemorySegment scale, long rows, int cols, DType outType,
                                        MemorySegment dst) {
        int block = QuantFormat.MXFP8.blockSize();
        int blocks = (int) QuantFormat.MXFP8.paddedIn(cols) / block;
        for (long r = 0; r < rows; r++) {
            long row = r * cols;
            int c = 0;
            for (; c + N <= cols; c += N) {
                float m = FloatFormats.e8m0ToFloat(scale.get(BYTE, r * blocks + c / block));
                store(decodeE4m3(loadBytes(weight, row + c)).mul(m), outType, dst, row + c);
            }
            for (; c < cols; c++) {
                float m = FloatFormats.e8m0ToFloat(scale.get(BYTE, r * blocks + c / block));
                FloatFormats.write(dst, outType, row + c, FloatFormats.e4m3ToFloat(weight.get(BYTE, row + c)) * m);
            }
        }
    }

    private static void fp4Dequantize(QuantFormat format, MemorySegment weight, MemorySegment scale, float scale2,
                                      long rows, int cols, DType outType, MemorySegment dst) {
        boolean nvfp4 = format == QuantFormat.NVFP4;
        IntVector[] table = nvfp4 ? NVFP4_TABLE : MXFP4_TABLE;
        int block = format.blockSize();
        int padded = (int) format.paddedIn(cols);
        int blocks = padded / block;
        for (long r = 0; r < rows; r++) {
            long row = r * cols;
            long packedRow = r * padded / 2;
            int c = 0;
            for (; c + 2 * N <= cols; c += 2 * N) {
                IntVector packed = loadBytes(weight, packedRow + c / 2);
                IntVector lo = UNPACK_LO.selectFrom(packed).lanewise(VectorOperators.LSHR, NIBBLE_SHIFT).and(0xF);
                IntVector hi = UNPACK_HI.selectFrom(packed).lanewise(VectorOperators.LSHR, NIBBLE_SHIFT).and(0xF);
                float s0 = fp4Scale(nvfp4, scale.get(BYTE, r * blocks + c / block), scale2);
                float s1 = fp4Scale(nvfp4, scale.get(BYTE, r * blocks + (c + N) / block), scale2);
                store(lo.selectFrom(table[0], table[1]).reinterpretAsFloats().mul(s0), outType, dst, row + c);
                store(hi.selectFrom(table[0], table[1]).reinterpretAsFloats().mul(s1), outType, dst, row + c + N);
            }
            for (; c < cols; c++) {
                int b = weight.get(BYTE, packedRow + c / 2);
                int code = (c & 1) == 0 ? b & 0xF : (b >> 4) & 0xF;
                float s = fp4Scale(nvfp4, scale.get(BYTE, r * blocks + c / block), scale2);
                float value = nvfp4 ? QuantMath.nvfp4Value(code) : FloatFormats.e2m1ToFloat(code);
                FloatFormats.write(dst, outType, row + c, value * s);
            }
        }
    }

    /** What an E2M1 value is multiplied by: nvfp4's product of both scales, mxfp4's 2^(byte-127). */
    private static float fp4Scale(boolean nvfp4, byte blockScale, float scale2) {
        return nvfp4 ? QuantMath.nvfp4Divisor(blockScale, scale2) : FloatFormats.e8m0ToFloat(blockScale);
    }

    // ---------------------------------------------------------------------------------------------
    // lane arithmetic

    /** N elements from {@code index} as floats, exactly (F16 infinities and NaNs included). */
    private static FloatVector load(MemorySegment src, DType dtype, long index) {
        return switch (dtype) {
            case F32 -> FloatVector.fromMemorySegment(F, src, index * 4, LITTLE_ENDIAN);
            case BF16 -> widen(src, index).lanewise(VectorOperators.LSHL, 16).reinterpretAsFloats();
            case F16 -> {
                IntVector h = widen(src, index);
                IntVector magnitude = h.and(0x7FFF).lanewise(VectorOperators.LSHL, 13);
                // Shifted into place the F16 bits are the value times 2^-112 (subnormals too): scale back.
                IntVector finite = magnitude.reinterpretAsFloats().mul(0x1p112f).reinterpretAsInts();
                IntVector bits = finite.blend(magnitude.or(INF_BITS), magnitude.compare(VectorOperators.GE, 0x7C00 << 13));
                yield bits.or(h.and(0x8000).lanewise(VectorOperators.LSHL, 16)).reinterpretAsFloats();
            }
            default -> throw new AssertionError(dtype);
        };
    }

    /** N 16-bit elements from {@code index}, sign-extended to int lanes. */
    private static IntVector widen(MemorySegment src, long index) {
        return (IntVector) ShortVector.fromMemorySegment(S, src, index * 2, LITTLE_ENDIAN).convertShape(VectorOperators.S2I, I, 0);
    }

    /** N bytes from {@code index}, zero-extended to int lanes. */
    private static IntVector loadBytes(MemorySegment src, long index) {
        return ((IntVector) ByteVector.fromMemorySegment(B, src, index, LITTLE_ENDIAN).convertShape(VectorOperators.B2I, I, 0))
                .and(0xFF);
    }

    /** The low byte of each lane, N bytes at {@code index}. */
    private static void storeBytes(IntVector v, MemorySegment dst, long index) {
        v.convertShape(VectorOperators.I2B, B, 0).reinterpretAsBytes().intoMemorySegment(dst, index, LITTLE_ENDIAN);
    }

    /** N floats as BF16 (nearest even, NaN to 0x7FC0) or F32 at element {@code index}. */
    private static void store(FloatVector v, DType outType, MemorySegment dst, long index) {
        if (outType == DType.F32) {
            v.intoMemorySegment(dst, index * 4, LITTLE_ENDIAN);
            return;
        }
        IntVector bits = v.reinterpretAsInts();
        IntVector rounded = bits.add(bits.lanewise(VectorOperators.LSHR, 16).and(1)).add(0x7FFF)
                .lanewise(VectorOperators.LSHR, 16);
        rounded = rounded.blend(0x7FC0, v.test(VectorOperators.IS_NAN).cast(I));
        rounded.convertShape(VectorOperators.I2S, S, 0).reinterpretAsShorts().intoMemorySegment(dst, index * 2, LITTLE_ENDIAN);
    }

    /**
     * x rounded to the input dtype's precision before its E4M3 code is taken, which is all the code can
     * tell of {@link FloatFormats#roundTo}: F16's subnormal range (below 2^-14) and its overflow (from
     * 65520) need no care, as E4M3 makes a signed zero of everything below 2^-10 and NaN from 480 up.
     */
    private static FloatVector roundForE4m3(DType dtype, FloatVector x) {
        IntVector bits = x.reinterpretAsInts();
        return switch (dtype) {
            case BF16 -> bits.add(bits.lanewise(VectorOperators.LSHR, 16).and(1)).add(0x7FFF).and(0xFFFF0000)
                    .reinterpretAsFloats();
            case F16 -> bits.add(bits.lanewise(VectorOperators.LSHR, 13).and(1)).add(0xFFF).and(0xFFFFE000)
                    .reinterpretAsFloats();
            default -> x;
        };
    }

    /** E4M3 codes as {@link FloatFormats#floatToE4m3}; with {@code saturate}, magnitudes clamped to 448 first. */
    private static IntVector e4m3(FloatVector x, boolean saturate) {
        IntVector bits = x.reinterpretAsInts();
        IntVector sign = bits.lanewise(VectorOperators.LSHR, 24).and(0x80);
        IntVector a = bits.and(ABS_MASK);
        if (saturate) {
            a = a.min(Float.floatToRawIntBits(FloatFormats.E4M3_MAX));
        }
        IntVector normal = a.add(a.lanewise(VectorOperators.LSHR, 20).and(1)).add(0x7FFFF - ((127 - 7) << 23))
                .lanewise(VectorOperators.LSHR, 20);
        IntVector subnormal = a.reinterpretAsFloats().add(16384.0f).reinterpretAsInts().sub(Float.floatToRawIntBits(16384.0f));
        IntVector code = normal.blend(subnormal, a.compare(VectorOperators.LT, 0x3C800000));
        code = code.blend(0x7F, a.compare(VectorOperators.GE, 0x43F00000));
        return code.or(sign);
    }

    /** Floats of E4M3 bytes (in int lanes, 0..255) as {@link FloatFormats#e4m3ToFloat}. */
    private static FloatVector decodeE4m3(IntVector bytes) {
        IntVector magnitude = bytes.and(0x7F);
        // Normal: the 7 bits shifted under the f32 sign, exponent rebiased by 120. Subnormal: m * 2^-9.
        IntVector normal = magnitude.lanewise(VectorOperators.LSHL, 20).add(120 << 23);
        IntVector subnormal = magnitude.convert(VectorOperators.I2F, 0).reinterpretAsFloats().mul(0x1p-9f).reinterpretAsInts();
        IntVector bits = normal.blend(subnormal, magnitude.compare(VectorOperators.LT, 8));
        bits = bits.blend(0x7FC00000, magnitude.compare(VectorOperators.EQ, 0x7F));
        return bits.or(bytes.and(0x80).lanewise(VectorOperators.LSHL, 24)).reinterpretAsFloats();
    }

    /**
     * nvfp4's E2M1 codes (nearest, ties to even, saturating at 6; sign when x < 0). From 1 up the float
     * is rounded to one mantissa bit by integer arithmetic; below 1 the grid is 0.5, the ulp of 2^22.
     */
    private static IntVector nvfp4Codes(FloatVector x) {
        IntVector a = x.reinterpretAsInts().and(ABS_MASK);
        IntVector normal = a.add(a.lanewise(VectorOperators.LSHR, 22).and(1)).add(0x1FFFFF)
                .lanewise(VectorOperators.LSHR, 22).sub(252).min(7);
        IntVector small = a.reinterpretAsFloats().add(0x1p22f).reinterpretAsInts().sub(Float.floatToRawIntBits(0x1p22f));
        IntVector code = normal.blend(small, a.compare(VectorOperators.LT, Float.floatToRawIntBits(1.0f)));
        return code.lanewise(VectorOperators.OR, 8, x.lt(0.0f).cast(I));
    }

    /** mxfp4's E2M1 codes: ties toward zero, sign unless x > 0 (zeros are 0x8). */
    private static IntVector mxfp4Codes(FloatVector x) {
        FloatVector abs = x.abs();
        IntVector a = abs.reinterpretAsInts();
        IntVector normal = a.add(0x1FFFFF).lanewise(VectorOperators.LSHR, 22).sub(252).min(7);
        IntVector small = IntVector.zero(I).add(1, abs.compare(VectorOperators.GT, 0.25f).cast(I))
                .add(1, abs.compare(VectorOperators.GT, 0.75f).cast(I));
        IntVector code = normal.blend(small, a.compare(VectorOperators.LT, Float.floatToRawIntBits(1.0f)));
        return code.lanewise(VectorOperators.OR, 8, x.compare(VectorOperators.GT, 0.0f).not().cast(I));
    }

    /** round_half_even(v) clamped to [lo, hi], as {@link QuantMath#intCode}. */
    private static IntVector intCodes(FloatVector v, int lo, int hi) {
        // Clamping first keeps |v| small enough for the 1.5 * 2^23 rounding trick; rint is monotone.
        FloatVector clamped = v.max(lo - 1.0f).min(hi + 1.0f);
        FloatVector rounded = clamped.add(0x1.8p23f).sub(0x1.8p23f);
        return ((IntVector) rounded.convert(VectorOperators.F2I, 0)).max(lo).min(hi);
    }

    // ---------------------------------------------------------------------------------------------
    // constant tables

    private static int[] halves(int first) {
        int[] a = new int[N];
        for (int i = 0; i < N; i++) {
            a[i] = first + i / 2;
        }
        return a;
    }

    private static int[] nibbleShifts() {
        int[] a = new int[N];
        for (int i = 0; i < N; i++) {
            a[i] = (i & 1) * 4;
        }
        return a;
    }

    private static IntVector[] table(java.util.function.IntToDoubleFunction value) {
        int[] bits = new int[2 * N];
        for (int code = 0; code < 16; code++) {
            bits[code] = Float.floatToRawIntBits((float) value.applyAsDouble(code));
        }
        return new IntVector[] {IntVector.fromArray(I, bits, 0), IntVector.fromArray(I, bits, N)};
    }
}
