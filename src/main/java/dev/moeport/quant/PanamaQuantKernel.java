package dev.moeport.quant;

import static java.nio.ByteOrder.LITTLE_ENDIAN;

import dev.moeport.tensor.DType;
import dev.moeport.tensor.FloatFormats;
import dev.moeport.tensor.Shape;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.Arrays;
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
 * the subnormal grid, BF16 widening and E4M3 decoding by shifts, E2M1 decoding by a table lookup in
 * registers. Real divisions stay divisions (the reference divides, and a reciprocal would round
 * differently); only the E8M0 scales, powers of two, become multiplications, which round identically.
 *
 * <p>Work goes row by row in passes (see the note on passes below): the amax of every block (one
 * reduction each; BF16 blocks of 16 and 32 from the maxima of each 16 elements, by folding
 * vectors), then all the row's block scales as vectors, then the elements with each block's
 * divisor broadcast (the E2M1 formats write one code per byte to a scratch row, then pack pairs of
 * bytes into nibbles). The remainder of a row that does not fill a vector (and the padding of a last
 * partial block) goes through {@link QuantMath}'s scalar definitions. Tuned for BF16 input, the
 * checkpoints' dtype; F32 gives the same bytes by the same code, and F16 is widened to F32 first.
 *
 * <p>Non-finite inputs are found on the way, from the integer maximum of the magnitudes' bits (NaN and
 * infinity compare above every finite value), and the chunk is then rescanned in order so that the
 * index reported is the first, as the scalar kernel reports it; outputs already written are garbage.
 *
 * <p>Vectors load and store through the segments directly. A vector access to a segment dispatches
 * on the segment's class; in a JVM that also uses heap segments (anyone may, the JDK included) that
 * dispatch goes bimorphic and the kernels run 1.1 to 1.6 times slower (measured on 4096 x 4096:
 * nvfp4 6.5 to 8.6 ms, fp8 2.9 to 4.7 ms). Copying each row to a Java array first avoids that but
 * serializes the memory traffic with the arithmetic, which costs about as much, always.
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
    /**
     * {@link #sixteensMaxima}'s lane indices into two vectors (0 to 2L-1) whose runs fill g = 16, 8 or 4 lanes: the
     * first (0) and the second half (1) of each run. Fields, not arrays: C2 knows a constant field's vector class, not
     * an array element's.
     */
    private static final ShortVector FOLD_16_0 = foldIndices(16, 0), FOLD_16_1 = foldIndices(16, 1);
    private static final ShortVector FOLD_8_0 = foldIndices(8, 0), FOLD_8_1 = foldIndices(8, 1);
    private static final ShortVector FOLD_4_0 = foldIndices(4, 0), FOLD_4_1 = foldIndices(4, 1);
    /** Lanes 0, 2, 4, ... and 1, 3, 5, ... of two int vectors: the blocks of 32 from their sixteens. */
    private static final IntVector EVEN_LANES = IntVector.fromArray(I, strided(0), 0);
    private static final IntVector ODD_LANES = IntVector.fromArray(I, strided(1), 0);
    /** E8M0 exponents: fractions above this cannot round log2 down to the integer (see QuantMath.ceilLog2). */
    private static final int LOG2_SAFE_FRACTION = 32;

    PanamaQuantKernel() {
        if (FloatVector.SPECIES_PREFERRED.vectorBitSize() < 256) {
            throw new UnsupportedOperationException("the vector kernels need 256-bit vectors, this JVM offers "
                    + FloatVector.SPECIES_PREFERRED.vectorBitSize() + "-bit ones");
        }
    }

    /** The width of the vectors the kernels use: 512 or 256 bits. */
    static int vectorBits() {
        return F.vectorBitSize();
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
    public String description() {
        return "Vector API, " + F.vectorBitSize() + "-bit vectors (" + F.length() + " floats)";
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
     * possibly partial (its missing elements are the zero padding). {@code bySixteens} (blocks of 16 or
     * 32) is a constant at each call: C2 then compiles one of the two BF16 paths into the pass.
     */
    private static void blockAmax(MemorySegment src, DType dtype, long chunkCount, long rowStart, int cols, int block,
                                  float[] amax, boolean bySixteens, int[] sixteens) {
        int full = cols / block;
        int worst = rawToFloatBits(dtype, dtype == DType.F32
                ? blockAmax32(src, rowStart, full, block, amax)
                : bySixteens ? blockAmaxBySixteens(src, rowStart, full, block, amax, sixteens)
                : blockAmax16(src, rowStart, full, block, amax));
        if (full * block < cols) {
            int bits = rangeMaxBits(src, dtype, rowStart + (long) full * block, cols - full * block);
            worst = Math.max(worst, bits);
            amax[full] = Float.intBitsToFloat(bits);
        }
        if (worst >= INF_BITS) {
            QuantMath.requireFinite(src, dtype, chunkCount);
        }
    }

    /**
     * {@link #blockAmax} of whole BF16 blocks of 16 or 32 (nvfp4, mxfp4, mxfp8): the largest
     * magnitude's bits. A reduction per block costs more than the block's loads: the maxima of every 16
     * elements come first, N at a time ({@link #sixteensMaxima}), then each block's from its sixteens,
     * N blocks at a time. (int4_g128's and fp8_pb's blocks of 128 keep {@link #blockAmax16}:
     * one reduction per 128 elements costs little, and this path, inlined deeper there, boxed a vector
     * per call.)
     */
    private static int blockAmaxBySixteens(MemorySegment src, long start, int blocks, int block, float[] amax,
                                           int[] sixteens) {
        int count = blocks * (block / 16);
        int s = 0;
        for (; s + N <= count; s += N) {
            sixteensMaxima(src, (start + 16L * s) * 2, sixteens, s);
        }
        for (; s < count; s++) {
            long offset = (start + 16L * s) * 2;
            ShortVector m = ShortVector.fromMemorySegment(S, src, offset, LITTLE_ENDIAN).and((short) 0x7FFF);
            for (int k = N; k < 16; k += N) {
                m = m.max(ShortVector.fromMemorySegment(S, src, offset + 2L * k, LITTLE_ENDIAN).and((short) 0x7FFF));
            }
            sixteens[s] = m.reduceLanes(VectorOperators.MAX);
        }
        boolean pairs = block == 32;
        int b = 0;
        IntVector group = IntVector.zero(I);
        for (; b + N <= blocks; b += N) {
            IntVector raw = IntVector.fromArray(I, sixteens, pairs ? 2 * b : b);
            if (pairs) {
                IntVector next = IntVector.fromArray(I, sixteens, 2 * b + N);
                raw = EVEN_LANES.selectFrom(raw, next).max(ODD_LANES.selectFrom(raw, next));
            }
            group = group.max(raw);
            raw.lanewise(VectorOperators.LSHL, 16).reinterpretAsFloats().intoArray(amax, b);
        }
        int worst = group.reduceLanes(VectorOperators.MAX);
        for (; b < blocks; b++) {
            int raw = pairs ? Math.max(sixteens[2 * b], sixteens[2 * b + 1]) : sixteens[b];
            worst = Math.max(worst, raw);
            amax[b] = Float.intBitsToFloat(raw << 16);
        }
        return worst;
    }

    /** {@link #blockAmax} of whole BF16 blocks (block a multiple of N): the largest magnitude's bits. */
    private static int blockAmax16(MemorySegment src, long start, int blocks, int block, float[] amax) {
        int worst = 0;
        for (int b = 0; b < blocks; b++) {
            long offset = (start + (long) b * block) * 2;
            ShortVector m = ShortVector.fromMemorySegment(S, src, offset, LITTLE_ENDIAN).and((short) 0x7FFF);
            for (int k = N; k < block; k += N) {
                m = m.max(ShortVector.fromMemorySegment(S, src, offset + 2L * k, LITTLE_ENDIAN).and((short) 0x7FFF));
            }
            int raw = m.reduceLanes(VectorOperators.MAX);
            worst = Math.max(worst, raw);
            amax[b] = Float.intBitsToFloat(raw << 16);
        }
        return worst;
    }

    /**
     * The magnitude bits (zero-extended 16-bit) of the N runs of 16 elements from byte {@code offset},
     * into {@code out} from {@code at}, without a reduction per run: the 8 vectors are folded pairwise
     * (each fold halves the lanes a run holds and doubles the runs a vector holds) until one vector holds
     * every run in two lanes, in order, whatever the width. A pass of its own: the vectors stay in it.
     *
     * <p>Written out, with no helper of ours taking or returning a vector, and too large for C2 to inline into its
     * caller: C2 inlines a helper only while its heuristics allow (the call's profiled frequency, the caller's size in
     * nodes, the helper's code already compiled), and a helper left out of line boxes every vector it takes and
     * returns. On 2 cores, inlined into {@link #blockAmaxBySixteens} and recompiled there, its folds were left out of
     * line in most runs with the release's AOT cache: the NVFP4 export allocated 10-20 GB of vectors and took half as
     * long again. (The kernel's smaller helpers that take vectors are inlined by the launchers' compile commands:
     * {@code src/dist/compile-commands}.)
     */
    private static void sixteensMaxima(MemorySegment src, long offset, int[] out, int at) {
        long step = 2L * SW.length();
        // the magnitudes of 8 full-width vectors
        ShortVector m0 = ShortVector.fromMemorySegment(SW, src, offset, LITTLE_ENDIAN).and((short) 0x7FFF);
        ShortVector m1 = ShortVector.fromMemorySegment(SW, src, offset + step, LITTLE_ENDIAN).and((short) 0x7FFF);
        ShortVector m2 = ShortVector.fromMemorySegment(SW, src, offset + 2 * step, LITTLE_ENDIAN).and((short) 0x7FFF);
        ShortVector m3 = ShortVector.fromMemorySegment(SW, src, offset + 3 * step, LITTLE_ENDIAN).and((short) 0x7FFF);
        ShortVector m4 = ShortVector.fromMemorySegment(SW, src, offset + 4 * step, LITTLE_ENDIAN).and((short) 0x7FFF);
        ShortVector m5 = ShortVector.fromMemorySegment(SW, src, offset + 5 * step, LITTLE_ENDIAN).and((short) 0x7FFF);
        ShortVector m6 = ShortVector.fromMemorySegment(SW, src, offset + 6 * step, LITTLE_ENDIAN).and((short) 0x7FFF);
        ShortVector m7 = ShortVector.fromMemorySegment(SW, src, offset + 7 * step, LITTLE_ENDIAN).and((short) 0x7FFF);
        // each fold of two vectors whose runs fill g lanes: one vector of the same runs in g/2 lanes, in order
        ShortVector f01 = FOLD_16_0.selectFrom(m0, m1).max(FOLD_16_1.selectFrom(m0, m1));
        ShortVector f23 = FOLD_16_0.selectFrom(m2, m3).max(FOLD_16_1.selectFrom(m2, m3));
        ShortVector f45 = FOLD_16_0.selectFrom(m4, m5).max(FOLD_16_1.selectFrom(m4, m5));
        ShortVector f67 = FOLD_16_0.selectFrom(m6, m7).max(FOLD_16_1.selectFrom(m6, m7));
        ShortVector w0 = FOLD_8_0.selectFrom(f01, f23).max(FOLD_8_1.selectFrom(f01, f23));
        ShortVector w1 = FOLD_8_0.selectFrom(f45, f67).max(FOLD_8_1.selectFrom(f45, f67));
        IntVector pairs = FOLD_4_0.selectFrom(w0, w1).max(FOLD_4_1.selectFrom(w0, w1)).reinterpretAsInts();
        pairs.and(0xFFFF).max(pairs.lanewise(VectorOperators.LSHR, 16)).intoArray(out, at);
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
    // passes
    //
    // Every loop over elements is a pass, a method (Job, long row) that the row loops below call
    // directly. The Vector API costs C2 some 400 IR nodes per operation while it parses, and C2 stops
    // inlining into a compilation at 18000 (NodeCountInliningCutoff): one method holding a format's
    // whole row of vector work would cross that line and leave a vector helper out of line, boxing
    // every vector that goes through it (two to three times slower). Split into passes, each is a
    // compilation of its own. Called directly, C2 still inlined them all into quantize when quantize
    // was compiled first (many calls on small chunks: exports, JMH), and boxed; the formats of three
    // or more passes (nvfp4, mxfp4, mxfp8) therefore call theirs through one call site, {@link
    // #eachRow}, which sees three or more receivers and never inlines them. (An earlier version used
    // a MethodHandle table for every format, slower in JMH, see the README.) Passes copy the job's
    // fields to locals first: C2 cannot tell the loop's stores to native memory from a field, and
    // would reload every field the loop reads on every iteration.

    /** A pass: one loop over row {@code r} of the job. */
    private interface Pass {
        void run(Job j, long r);
    }

    private static final Pass[] NVFP4_PASSES = {PanamaQuantKernel::blockAmaxPass, PanamaQuantKernel::nvfp4Scales,
        PanamaQuantKernel::nvfp4Divisors, PanamaQuantKernel::nvfp4Codes, PanamaQuantKernel::packNibbles};
    private static final Pass[] MXFP4_PASSES = {PanamaQuantKernel::blockAmaxPass, PanamaQuantKernel::e8m0Scales,
        PanamaQuantKernel::mxfp4Codes, PanamaQuantKernel::packNibbles};
    private static final Pass[] MXFP8_PASSES = {PanamaQuantKernel::blockAmaxPass, PanamaQuantKernel::e8m0Scales,
        PanamaQuantKernel::mxfp8Row};

    /** Every row through the passes in order, from one call site (see above). */
    private static void eachRow(Job job, Pass[] passes) {
        for (long r = 0; r < job.rows; r++) {
            for (Pass pass : passes) {
                pass.run(job, r);
            }
        }
    }

    /** One quantize or dequantize call: its arguments, and the per-row scratch its passes share. */
    private static final class Job {
        final QuantFormat format;
        /** Quantize: the dtype the passes load (BF16 or F32; F16 input is widened to F32); dequantize: the output dtype. */
        final DType dtype;
        /** Quantize: the dtype the input came in, which fp8 and fp8_pb round to (F16 input is loaded as F32). */
        final DType rounding;
        final long rows;
        final int cols;
        final float tensorScale;
        /** Quantize: the input elements; dequantize: unused. */
        final MemorySegment src;
        final MemorySegment weight;
        final MemorySegment scale;
        /** Dequantize: the output elements. */
        final MemorySegment dst;
        /** Row length rounded up to whole blocks, and the blocks of a row. */
        final int padded;
        final int blocks;
        /** Per block of the current row: amax, then what its elements are divided or multiplied by. */
        final float[] amax;
        final float[] factor;
        /** int4_g128: the second row's factors; fp8_pb: the amax of the band of 128 rows. */
        final float[] more;
        /** BF16 blocks of 16 and 32: the maxima of each 16 elements of the row, as magnitude bits. */
        final int[] sixteens;
        /** nvfp4, mxfp4: the row's codes, one per byte, before packing. */
        MemorySegment codes;
        /** fp8 to BF16: the results of the 128 E4M3 magnitudes, in vectors of 16-bit lanes. */
        ShortVector[] bf16Table;

        Job(QuantFormat format, DType dtype, DType rounding, long rows, int cols, float tensorScale, MemorySegment src,
            MemorySegment weight, MemorySegment scale, MemorySegment dst) {
            this.format = format;
            this.dtype = dtype;
            this.rounding = rounding;
            this.rows = rows;
            this.cols = cols;
            this.tensorScale = tensorScale;
            this.src = src;
            this.weight = weight;
            this.scale = scale;
            this.dst = dst;
            this.padded = (int) format.paddedIn(cols);
            this.blocks = format.blockSize() == 0 ? 1 : (padded + format.blockSize() - 1) / format.blockSize();
            this.amax = new float[blocks];
            this.factor = new float[blocks];
            this.more = new float[blocks];
            this.sixteens = new int[padded / 16];
        }
    }


    // ---------------------------------------------------------------------------------------------
    // quantize

    @Override
    public void quantize(QuantFormat format, MemorySegment src, DType dtype, long rows, long cols, float tensorScale,
                         MemorySegment weight, MemorySegment scale) {
        QuantMath.checkQuantize(format, src, dtype, rows, cols, tensorScale, weight, scale);
        if (dtype == DType.F16) {
            quantizeWidened(format, src, rows, cols, tensorScale, weight, scale);
        } else {
            quantize(format, src, dtype, dtype, rows, cols, tensorScale, weight, scale);
        }
    }

    /** {@link #quantize} of elements loaded as {@code dtype}, which came in as {@code rounding}. */
    private static void quantize(QuantFormat format, MemorySegment src, DType dtype, DType rounding, long rows, long cols,
                                 float tensorScale, MemorySegment weight, MemorySegment scale) {
        Job job = new Job(format, dtype, rounding, rows, (int) cols, tensorScale, src, weight, scale, null);
        switch (format) {
            case FP8 -> {
                job.factor[0] = tensorScale;
                for (long r = 0; r < rows; r++) {
                    fp8Row(job, r);
                }
            }
            case FP8_PC -> {
                for (long r = 0; r < rows; r++) {
                    rowScale(job, r);
                    fp8Row(job, r);
                }
            }
            case INT8_WO -> {
                for (long r = 0; r < rows; r++) {
                    rowScale(job, r);
                    int8Row(job, r);
                }
            }
            case FP8_PB -> fp8PerBlock(job);
            case NVFP4 -> {
                try (Arena arena = Arena.ofConfined()) {
                    job.codes = codeScratch(arena, job);
                    eachRow(job, NVFP4_PASSES);
                }
            }
            case MXFP4 -> {
                try (Arena arena = Arena.ofConfined()) {
                    job.codes = codeScratch(arena, job);
                    eachRow(job, MXFP4_PASSES);
                }
            }
            case MXFP8 -> eachRow(job, MXFP8_PASSES);
            case INT4_G128 -> {
                for (long r = 0; r < rows; r += 2) {
                    int4Scales(job, r);
                    int4Rows(job, r);
                }
            }
        }
    }

    /** F16 rows widened per batch of this many values at most (a whole number of the rows the format takes together). */
    private static final int WIDENED_VALUES = 16 << 10;

    /**
     * F16 input quantized as the F32 of the same values (rounded, where fp8 and fp8_pb round, to F16), widened a batch
     * of rows at a time in a pass of its own. Loaded inside a format's pass, F16 took C2 past its node budget and left a
     * vector boxed per 16 values (2 MB allocated for a 256 x 1024 matrix, a third of BF16's speed), and taught C2 through
     * the profile of {@link #load} that the passes load F16, which boxed other formats' passes in the same JVM.
     */
    private static void quantizeWidened(QuantFormat format, MemorySegment src, long rows, long cols, float tensorScale,
                                        MemorySegment weight, MemorySegment scale) {
        int together = format == QuantFormat.FP8_PB ? QuantFormat.FP8_PB.blockSize() : format.packsRowPairs() ? 2 : 1;
        long batch = cols == 0 ? Math.max(rows, 1) : Math.max(together, WIDENED_VALUES / cols / together * together);
        // Output bytes of each `together` rows: batches begin at multiples of them, the last takes what is left.
        long weightBytes = format.weightType().byteSize(format.weightShape(Shape.of(together, cols)).numel());
        long scaleBytes = format.scaleIsTensorScale() ? 0
                : format.scaleType().byteSize(format.scaleShape(Shape.of(together, cols)).numel());
        MemorySegment widened = widenedBuffer(Math.min(rows, batch) * cols * 4);
        for (long r = 0; r < rows; r += batch) {
            long n = Math.min(batch, rows - r);
            widenF16(src, r * cols, n * cols, widened);
            boolean last = r + n == rows;
            long weightAt = r / together * weightBytes;
            MemorySegment batchWeight = weight.asSlice(weightAt, last ? weight.byteSize() - weightAt : n / together * weightBytes);
            long scaleAt = r / together * scaleBytes;
            MemorySegment batchScale = format.scaleIsTensorScale() ? scale
                    : scale.asSlice(scaleAt, last ? scale.byteSize() - scaleAt : n / together * scaleBytes);
            try {
                quantize(format, widened, DType.F32, DType.F16, n, cols, tensorScale, batchWeight, batchScale);
            } catch (NonFiniteValueException e) {
                throw new NonFiniteValueException(r * cols + e.index());
            }
        }
    }

    /** Each thread's buffer for widened F16 rows, grown as needed; native, as vector stores into the heap are slower. */
    private static final ThreadLocal<MemorySegment[]> WIDENED = ThreadLocal.withInitial(() -> new MemorySegment[1]);

    /**
     * This thread's buffer of at least {@code bytes}: kept from call to call, so that a warm kernel allocates no more for
     * F16 than for BF16 ({@link dev.moeport.exec.KernelWarmUp} ends on that).
     */
    private static MemorySegment widenedBuffer(long bytes) {
        MemorySegment[] held = WIDENED.get();
        if (held[0] == null || held[0].byteSize() < bytes) {
            held[0] = Arena.ofAuto().allocate(Math.max(bytes, (long) WIDENED_VALUES * 4), 64);
        }
        return held[0];
    }

    /** {@code count} F16 values from element {@code from} of {@code src} into {@code dst} as F32, exactly. */
    private static void widenF16(MemorySegment src, long from, long count, MemorySegment dst) {
        long i = 0;
        for (; i + N <= count; i += N) {
            loadF16(src, from + i).intoMemorySegment(dst, i * 4, LITTLE_ENDIAN);
        }
        for (; i < count; i++) {
            dst.set(FloatFormats.FLOAT_LE, i * 4, FloatFormats.read(src, DType.F16, from + i));
        }
    }

    /**
     * The E2M1 formats write a row's codes one per byte, then pack pairs. The scratch row is native:
     * vector stores into a heap segment, or a store site that sees both kinds, run several times slower.
     */
    private static MemorySegment codeScratch(Arena arena, Job job) {
        return arena.allocate(job.padded, 64);
    }

    /** fp8 and fp8_pc: the row divided by {@code factor[0]}, for fp8 the quotient rounded to the dtype first. */
    private static void fp8Row(Job j, long r) {
        QuantFormat format = j.format;
        MemorySegment src = j.src;
        DType dtype = j.dtype;
        DType rounding = j.rounding;
        long rows = j.rows;
        int cols = j.cols;
        MemorySegment weight = j.weight;
        float[] factor = j.factor;
        long row = r * cols;
        float divisor = factor[0];
        boolean round = format == QuantFormat.FP8;
        IntVector worst = IntVector.zero(I);
        int c = 0;
        for (; c + N <= cols; c += N) {
            FloatVector w = load(src, dtype, row + c);
            worst = worst.max(w.reinterpretAsInts().and(ABS_MASK));
            FloatVector x = w.div(divisor);
            storeBytes(e4m3(round ? roundForE4m3(rounding, x) : x, false), weight, row + c);
        }
        if (worst.reduceLanes(VectorOperators.MAX) >= INF_BITS) {
            QuantMath.requireFinite(src, dtype, rows * cols);
        }
        for (; c < cols; c++) {
            float w = FloatFormats.read(src, dtype, row + c);
            if (!Float.isFinite(w)) {
                QuantMath.requireFinite(src, dtype, rows * cols);
            }
            float x = w / divisor;
            weight.set(BYTE, row + c, FloatFormats.floatToE4m3(round ? FloatFormats.roundTo(rounding, x) : x));
        }
    }

    /** fp8_pc and int8_wo: the row's scale, amax / 448 or / 127, into the output and {@code factor[0]}. */
    private static void rowScale(Job j, long r) {
        QuantFormat format = j.format;
        MemorySegment src = j.src;
        DType dtype = j.dtype;
        long rows = j.rows;
        int cols = j.cols;
        MemorySegment scale = j.scale;
        float[] factor = j.factor;
        int bits = rangeMaxBits(src, dtype, r * cols, cols);
        if (bits >= INF_BITS) {
            QuantMath.requireFinite(src, dtype, rows * cols);
        }
        float s = QuantMath.nonZero(Float.intBitsToFloat(bits) / format.elementMax());
        scale.setAtIndex(FloatFormats.FLOAT_LE, r, s);
        factor[0] = s;
    }

    private static void int8Row(Job j, long r) {
        MemorySegment src = j.src;
        DType dtype = j.dtype;
        int cols = j.cols;
        MemorySegment weight = j.weight;
        float[] factor = j.factor;
        long row = r * cols;
        float s = factor[0];
        int c = 0;
        for (; c + N <= cols; c += N) {
            storeBytes(intCodes(load(src, dtype, row + c).div(s), QuantMath.INT8_MIN, QuantMath.INT8_MAX), weight, row + c);
        }
        for (; c < cols; c++) {
            weight.set(BYTE, row + c, (byte) QuantMath.intCode(element(j, row, c) / s, QuantMath.INT8_MIN, QuantMath.INT8_MAX));
        }
    }

    /** fp8_pb: bands of 128 rows; each 128 x 128 block's scale in the weight's own dtype. */
    private static void fp8PerBlock(Job j) {
        int block = QuantFormat.FP8_PB.blockSize();
        for (long r0 = 0; r0 < j.rows; r0 += block) {
            long end = Math.min(j.rows, r0 + block);
            Arrays.fill(j.more, 0.0f);
            for (long r = r0; r < end; r++) {
                bandAmax(j, r);
            }
            for (int b = 0; b < j.blocks; b++) {
                j.factor[b] = QuantMath.nonZero(FloatFormats.roundTo(j.rounding, j.more[b] / FloatFormats.E4M3_MAX));
                j.scale.setAtIndex(FloatFormats.FLOAT_LE, r0 / block * j.blocks + b, j.factor[b]);
            }
            for (long r = r0; r < end; r++) {
                fp8BlockRow(j, r);
            }
        }
    }

    /** fp8_pb: the row's block maxima folded into the band's ({@code more}). */
    private static void bandAmax(Job j, long r) {
        wideBlockAmaxPass(j, r);
        for (int b = 0; b < j.blocks; b++) {
            j.more[b] = Math.max(j.more[b], j.amax[b]);
        }
    }

    /** fp8_pb: each 128-column block divided by its scale, the quotient rounded to the dtype. */
    private static void fp8BlockRow(Job j, long r) {
        MemorySegment src = j.src;
        DType dtype = j.dtype;
        DType rounding = j.rounding;
        int cols = j.cols;
        MemorySegment weight = j.weight;
        float[] factor = j.factor;
        long row = r * cols;
        int block = QuantFormat.FP8_PB.blockSize();
        int c = 0;
        for (; c + N <= cols; c += N) {
            FloatVector x = load(src, dtype, row + c).div(factor[c / block]);
            storeBytes(e4m3(roundForE4m3(rounding, x), false), weight, row + c);
        }
        for (; c < cols; c++) {
            float x = FloatFormats.roundTo(rounding, element(j, row, c) / factor[c / block]);
            weight.set(BYTE, row + c, FloatFormats.floatToE4m3(x));
        }
    }

    /** Each block's amax of the row into {@code amax}, blocks of 16 or 32; the last may be partial (zero padding). */
    private static void blockAmaxPass(Job j, long r) {
        blockAmax(j.src, j.dtype, j.rows * j.cols, r * j.cols, j.cols, j.format.blockSize(), j.amax, true, j.sixteens);
    }

    /** {@link #blockAmaxPass} for blocks of 128 (int4_g128, fp8_pb). */
    private static void wideBlockAmaxPass(Job j, long r) {
        blockAmax(j.src, j.dtype, j.rows * j.cols, r * j.cols, j.cols, j.format.blockSize(), j.amax, false, null);
    }

    /** nvfp4: the row's E4M3 block scales. */
    private static void nvfp4Scales(Job j, long r) {
        float tensorScale = j.tensorScale;
        MemorySegment scale = j.scale;
        int blocks = j.blocks;
        float[] amax = j.amax;
        float scaleDivisor = FloatFormats.E2M1_MAX * tensorScale;
        long index = r * blocks;
        int b = 0;
        for (; b + N <= blocks; b += N) {
            FloatVector s = FloatVector.fromArray(F, amax, b).div(scaleDivisor);
            s = s.blend(1.0f, s.eq(0.0f)).max(QuantMath.NVFP4_MIN_BLOCK_SCALE).min(FloatFormats.E4M3_MAX);
            storeBytes(e4m3(s, false), scale, index + b);
        }
        for (; b < blocks; b++) {
            scale.set(BYTE, index + b, QuantMath.nvfp4BlockScale(amax[b], tensorScale));
        }
    }

    /** nvfp4: what each block's elements are divided by, from the block scales just written. */
    private static void nvfp4Divisors(Job j, long r) {
        float tensorScale = j.tensorScale;
        MemorySegment scale = j.scale;
        int blocks = j.blocks;
        float[] factor = j.factor;
        long index = r * blocks;
        int b = 0;
        for (; b + N <= blocks; b += N) {
            decodeE4m3(loadBytes(scale, index + b)).mul(tensorScale).intoArray(factor, b);
        }
        for (; b < blocks; b++) {
            factor[b] = QuantMath.nvfp4Divisor(scale.get(BYTE, index + b), tensorScale);
        }
    }

    /** nvfp4: the row's E2M1 codes, one per byte of {@code codes}, padding included. */
    private static void nvfp4Codes(Job j, long r) {
        MemorySegment src = j.src;
        DType dtype = j.dtype;
        int cols = j.cols;
        MemorySegment codes = j.codes;
        int padded = j.padded;
        float[] factor = j.factor;
        long row = r * cols;
        int block = QuantFormat.NVFP4.blockSize();
        int c = 0;
        for (; c + N <= cols; c += N) {
            storeBytes(nvfp4CodeLanes(load(src, dtype, row + c).div(factor[c / block])), codes, c);
        }
        for (; c < padded; c++) {
            codes.set(BYTE, c, (byte) QuantMath.nvfp4Code(element(j, row, c) / factor[c / block]));
        }
    }

    /** mxfp4: the row's E2M1 codes, one per byte of {@code codes}, padding included. */
    private static void mxfp4Codes(Job j, long r) {
        MemorySegment src = j.src;
        DType dtype = j.dtype;
        int cols = j.cols;
        MemorySegment codes = j.codes;
        int padded = j.padded;
        float[] factor = j.factor;
        long row = r * cols;
        int block = QuantFormat.MXFP4.blockSize();
        int c = 0;
        for (; c + N <= cols; c += N) {
            // The factor is 2^-e: the product is the correctly rounded quotient by 2^e.
            storeBytes(mxfp4CodeLanes(load(src, dtype, row + c).mul(factor[c / block])), codes, c);
        }
        for (; c < padded; c++) {
            codes.set(BYTE, c, (byte) QuantMath.mxfp4Code(element(j, row, c) * factor[c / block]));
        }
    }

    /** nvfp4, mxfp4: the row's codes two per byte, even elements in the low nibble: each 16-bit lane holds a pair. */
    private static void packNibbles(Job j, long r) {
        MemorySegment weight = j.weight;
        MemorySegment codes = j.codes;
        int padded = j.padded;
        long out = r * padded / 2;
        int lanes = SW.length();
        int i = 0;
        for (; 2 * (i + lanes) <= padded; i += lanes) {
            ShortVector pair = ShortVector.fromMemorySegment(SW, codes, 2L * i, LITTLE_ENDIAN);
            pair.or(pair.lanewise(VectorOperators.LSHR, 4)).convertShape(VectorOperators.S2B, BW, 0).reinterpretAsBytes()
                    .intoMemorySegment(weight, out + i, LITTLE_ENDIAN);
        }
        for (; 2 * i < padded; i++) {
            weight.set(BYTE, out + i, (byte) (codes.get(BYTE, 2L * i) | codes.get(BYTE, 2L * i + 1) << 4));
        }
    }

    /**
     * mxfp4's (amax / 6, no upper clamp) or mxfp8's (amax / 448, clamped to 127) E8M0 exponents of the
     * row's blocks: the scale bytes, and 2^-e into {@code factor}. The vector path takes ceil(log2 y)
     * from the float bits; the lanes where the float log2 could round down to the integer (a tiny
     * fraction, or a subnormal y) are recomputed by {@link QuantMath}.
     */
    private static void e8m0Scales(Job j, long r) {
        QuantFormat format = j.format;
        MemorySegment scale = j.scale;
        int blocks = j.blocks;
        float[] amax = j.amax;
        float[] factor = j.factor;
        boolean mxfp8 = format == QuantFormat.MXFP8;
        float divisor = format.elementMax();
        long index = r * blocks;
        int b = 0;
        for (; b + N <= blocks; b += N) {
            FloatVector y = FloatVector.fromArray(F, amax, b).div(divisor);
            IntVector bits = y.reinterpretAsInts();
            IntVector biased = bits.lanewise(VectorOperators.LSHR, 23);
            IntVector fraction = bits.and(0x7FFFFF);
            IntVector e = biased.sub(127).add(1, fraction.compare(VectorOperators.NE, 0));
            e = e.blend(-FloatFormats.E8M0_BIAS, bits.compare(VectorOperators.EQ, 0));
            VectorMask<Integer> rare = biased.compare(VectorOperators.EQ, 0).and(bits.compare(VectorOperators.NE, 0))
                    .or(fraction.compare(VectorOperators.NE, 0).and(fraction.compare(VectorOperators.LT, LOG2_SAFE_FRACTION)));
            if (rare.anyTrue()) {
                int[] lanes = new int[N];
                for (int k = 0; k < N; k++) {
                    lanes[k] = mxfp8 ? QuantMath.mxfp8Exponent(amax[b + k]) : QuantMath.mxfp4Exponent(amax[b + k]);
                }
                e = IntVector.fromArray(I, lanes, 0);
            }
            e = e.max(-FloatFormats.E8M0_BIAS);
            if (mxfp8) {
                e = e.min(FloatFormats.E8M0_BIAS);
            }
            storeBytes(e.add(FloatFormats.E8M0_BIAS), scale, index + b);
            // 2^-e is a normal float: e <= 126 for any finite amax.
            IntVector.broadcast(I, 127).sub(e).lanewise(VectorOperators.LSHL, 23).reinterpretAsFloats().intoArray(factor, b);
        }
        for (; b < blocks; b++) {
            int e = mxfp8 ? QuantMath.mxfp8Exponent(amax[b]) : QuantMath.mxfp4Exponent(amax[b]);
            scale.set(BYTE, index + b, QuantMath.e8m0Byte(e));
            factor[b] = QuantMath.pow2(-e);
        }
    }

    /** mxfp8: the row times each block's 2^-e, clamped to +-448, as E4M3. */
    private static void mxfp8Row(Job j, long r) {
        MemorySegment src = j.src;
        DType dtype = j.dtype;
        int cols = j.cols;
        MemorySegment weight = j.weight;
        float[] factor = j.factor;
        long row = r * cols;
        int block = QuantFormat.MXFP8.blockSize();
        int c = 0;
        for (; c + N <= cols; c += N) {
            storeBytes(e4m3(load(src, dtype, row + c).mul(factor[c / block]), true), weight, row + c);
        }
        for (; c < cols; c++) {
            float x = element(j, row, c) * factor[c / block];
            x = Math.min(Math.max(x, -FloatFormats.E4M3_MAX), FloatFormats.E4M3_MAX);
            weight.set(BYTE, row + c, FloatFormats.floatToE4m3(x));
        }
    }

    /** int4_g128: the group scales of rows r and r+1, into the output, {@code factor} and {@code more}. */
    private static void int4Scales(Job j, long r) {
        MemorySegment scale = j.scale;
        int blocks = j.blocks;
        float[] amax = j.amax;
        float[] factor = j.factor;
        float[] more = j.more;
        for (int k = 0; k < 2; k++) {
            float[] s = k == 0 ? factor : more;
            wideBlockAmaxPass(j, r + k);
            for (int g = 0; g < blocks; g++) {
                s[g] = QuantMath.nonZero(amax[g] / QuantFormat.INT4_G128.elementMax());
                scale.setAtIndex(FloatFormats.FLOAT_LE, (r + k) * blocks + g, s[g]);
            }
        }
    }

    /** int4_g128: rows r and r+1 packed into one row of bytes, low nibble from row r. */
    private static void int4Rows(Job j, long r) {
        MemorySegment src = j.src;
        DType dtype = j.dtype;
        int cols = j.cols;
        MemorySegment weight = j.weight;
        float[] factor = j.factor;
        float[] more = j.more;
        long row = r * cols;
        long out = r / 2 * cols;
        int group = QuantFormat.INT4_G128.blockSize();
        int c = 0;
        for (; c + N <= cols; c += N) {
            IntVector lo = intCodes(load(src, dtype, row + c).div(factor[c / group]), QuantMath.INT4_MIN, QuantMath.INT4_MAX).and(0xF);
            IntVector hi = intCodes(load(src, dtype, row + cols + c).div(more[c / group]), QuantMath.INT4_MIN, QuantMath.INT4_MAX).and(0xF);
            storeBytes(lo.or(hi.lanewise(VectorOperators.LSHL, 4)), weight, out + c);
        }
        for (; c < cols; c++) {
            int lo = QuantMath.intCode(element(j, row, c) / factor[c / group], QuantMath.INT4_MIN, QuantMath.INT4_MAX);
            int hi = QuantMath.intCode(element(j, row + cols, c) / more[c / group], QuantMath.INT4_MIN, QuantMath.INT4_MAX);
            weight.set(BYTE, out + c, (byte) ((lo & 0xF) | (hi & 0xF) << 4));
        }
    }

    /** Element {@code c} of the row starting at {@code row}, zero in the padding past {@code cols}. */
    private static float element(Job j, long row, int c) {
        return c < j.cols ? FloatFormats.read(j.src, j.dtype, row + c) : 0.0f;
    }

    // ---------------------------------------------------------------------------------------------
    // dequantize

    @Override
    public void dequantize(QuantFormat format, MemorySegment weight, MemorySegment scale, float tensorScale,
                           long rows, long cols, DType outType, MemorySegment dst) {
        QuantMath.checkDequantize(format, weight, scale, rows, cols, outType, dst);
        Job job = new Job(format, outType, null, rows, (int) cols, tensorScale, null, weight, scale, dst);
        switch (format) {
            case FP8 -> {
                job.factor[0] = FloatFormats.roundTo(outType, tensorScale);
                if (outType == DType.BF16) {
                    job.bf16Table = bf16Table(job.factor[0]);
                    for (long r = 0; r < rows; r++) {
                        fp8DequantizeBf16Row(job, r);
                    }
                } else {
                    for (long r = 0; r < rows; r++) {
                        fp8DequantizeRow(job, r);
                    }
                }
            }
            case MXFP8 -> {
                for (long r = 0; r < rows; r++) {
                    fp8DequantizeRow(job, r);
                }
            }
            case NVFP4, MXFP4 -> {
                for (long r = 0; r < rows; r++) {
                    fp4DequantizeRow(job, r);
                }
            }
            case FP8_PC, FP8_PB, INT8_WO, INT4_G128 -> throw new AssertionError(format); // checked above: decoded outside the kernel
        }
    }

    /** fp8 (times the tensor scale, rounded to the output dtype) and mxfp8 (times 2^(byte - 127)). */
    private static void fp8DequantizeRow(Job j, long r) {
        QuantFormat format = j.format;
        DType dtype = j.dtype;
        int cols = j.cols;
        MemorySegment weight = j.weight;
        MemorySegment scale = j.scale;
        MemorySegment dst = j.dst;
        int blocks = j.blocks;
        float[] factor = j.factor;
        long row = r * cols;
        boolean mxfp8 = format == QuantFormat.MXFP8;
        int block = QuantFormat.MXFP8.blockSize();
        long index = r * blocks;
        int c = 0;
        for (; c + N <= cols; c += N) {
            float m = mxfp8 ? FloatFormats.e8m0ToFloat(scale.get(BYTE, index + c / block)) : factor[0];
            store(decodeE4m3(loadBytes(weight, row + c)).mul(m), dtype, dst, row + c);
        }
        for (; c < cols; c++) {
            float m = mxfp8 ? FloatFormats.e8m0ToFloat(scale.get(BYTE, index + c / block)) : factor[0];
            QuantMath.writeDequantized(dst, dtype, row + c, FloatFormats.e4m3ToFloat(weight.get(BYTE, row + c)) * m);
        }
    }

    /**
     * fp8 to BF16 has one scale for the tensor, so each of the 128 E4M3 magnitudes has one result:
     * computed once, as the scalar kernel computes it, and looked up in registers.
     */
    private static ShortVector[] bf16Table(float scale) {
        short[] results = new short[128];
        for (int e = 0; e < 128; e++) {
            results[e] = FloatFormats.floatToBf16(FloatFormats.e4m3ToFloat((byte) e) * scale);
        }
        ShortVector[] table = new ShortVector[128 / SW.length()];
        for (int k = 0; k < table.length; k++) {
            table[k] = ShortVector.fromArray(SW, results, k * SW.length());
        }
        return table;
    }

    /**
     * fp8 to BF16 by table: the magnitude's result, with the sign bit flipped for negative codes (the
     * product and its rounding are symmetric), NaN canonical as the scalar kernel writes it.
     */
    private static void fp8DequantizeBf16Row(Job j, long r) {
        int cols = j.cols;
        MemorySegment weight = j.weight;
        MemorySegment dst = j.dst;
        ShortVector[] table = j.bf16Table;
        long row = r * cols;
        int lanes = SW.length();
        int c = 0;
        for (; c + lanes <= cols; c += lanes) {
            ShortVector b = (ShortVector) ByteVector.fromMemorySegment(BW, weight, row + c, LITTLE_ENDIAN)
                    .convertShape(VectorOperators.B2S, SW, 0);
            ShortVector magnitude = b.and((short) 0x7F);
            // A two-vector lookup covers 2 * lanes entries (the index wraps); later ranges overwrite.
            ShortVector v = magnitude.selectFrom(table[0], table[1]);
            for (int k = 1; k < table.length / 2; k++) {
                v = v.blend(magnitude.selectFrom(table[2 * k], table[2 * k + 1]),
                        magnitude.compare(VectorOperators.GE, (short) (2 * k * lanes)));
            }
            v = v.lanewise(VectorOperators.XOR, b.and((short) 0x80).lanewise(VectorOperators.LSHL, 8));
            v = v.blend((short) 0x7FC0, v.and((short) 0x7FFF).compare(VectorOperators.GT, (short) 0x7F80));
            v.intoMemorySegment(dst, (row + c) * 2, LITTLE_ENDIAN);
        }
        float scale = j.factor[0];
        for (; c < cols; c++) {
            QuantMath.writeDequantized(dst, DType.BF16, row + c, FloatFormats.e4m3ToFloat(weight.get(BYTE, row + c)) * scale);
        }
    }

    /** nvfp4 and mxfp4: code values from a table in registers, times the block's scale. */
    private static void fp4DequantizeRow(Job j, long r) {
        QuantFormat format = j.format;
        DType dtype = j.dtype;
        int cols = j.cols;
        float tensorScale = j.tensorScale;
        MemorySegment weight = j.weight;
        MemorySegment scale = j.scale;
        MemorySegment dst = j.dst;
        int padded = j.padded;
        int blocks = j.blocks;
        boolean nvfp4 = format == QuantFormat.NVFP4;
        IntVector[] table = nvfp4 ? NVFP4_TABLE : MXFP4_TABLE;
        int block = format.blockSize();
        long row = r * cols;
        long packedRow = r * padded / 2;
        long index = r * blocks;
        int c = 0;
        for (; c + 2 * N <= cols; c += 2 * N) {
            IntVector packed = loadBytes(weight, packedRow + c / 2);
            IntVector lo = UNPACK_LO.selectFrom(packed).lanewise(VectorOperators.LSHR, NIBBLE_SHIFT).and(0xF);
            IntVector hi = UNPACK_HI.selectFrom(packed).lanewise(VectorOperators.LSHR, NIBBLE_SHIFT).and(0xF);
            float s0 = fp4Scale(nvfp4, scale.get(BYTE, index + c / block), tensorScale);
            float s1 = fp4Scale(nvfp4, scale.get(BYTE, index + (c + N) / block), tensorScale);
            store(lo.selectFrom(table[0], table[1]).reinterpretAsFloats().mul(s0), dtype, dst, row + c);
            store(hi.selectFrom(table[0], table[1]).reinterpretAsFloats().mul(s1), dtype, dst, row + c + N);
        }
        for (; c < cols; c++) {
            int b = weight.get(BYTE, packedRow + c / 2);
            int code = (c & 1) == 0 ? b & 0xF : (b >> 4) & 0xF;
            float s = fp4Scale(nvfp4, scale.get(BYTE, index + c / block), tensorScale);
            float value = nvfp4 ? QuantMath.nvfp4Value(code) : FloatFormats.e2m1ToFloat(code);
            QuantMath.writeDequantized(dst, dtype, row + c, value * s);
        }
    }

    /** What an E2M1 value is multiplied by: nvfp4's product of both scales, mxfp4's 2^(byte-127). */
    private static float fp4Scale(boolean nvfp4, byte blockScale, float scale2) {
        return nvfp4 ? QuantMath.nvfp4Divisor(blockScale, scale2) : FloatFormats.e8m0ToFloat(blockScale);
    }

    // ---------------------------------------------------------------------------------------------
    // lane arithmetic

    /** N BF16 or F32 elements from {@code index} as floats, exactly. */
    private static FloatVector load(MemorySegment src, DType dtype, long index) {
        return switch (dtype) {
            case F32 -> FloatVector.fromMemorySegment(F, src, index * 4, LITTLE_ENDIAN);
            case BF16 -> widen(src, index).lanewise(VectorOperators.LSHL, 16).reinterpretAsFloats();
            default -> throw new AssertionError(dtype); // F16 is widened first (quantizeWidened)
        };
    }

    /** N F16 elements from {@code index} as floats, exactly (infinities and NaNs included). */
    private static FloatVector loadF16(MemorySegment src, long index) {
        IntVector h = widen(src, index);
        IntVector magnitude = h.and(0x7FFF);
        // Normal: exponent rebiased (15 to 127). Subnormal: the mantissa times 2^-24, exactly
        // (no arithmetic on subnormal floats, see decodeE4m3). Infinity and NaN kept.
        IntVector bits = magnitude.lanewise(VectorOperators.LSHL, 13).add(112 << 23);
        IntVector subnormal = magnitude.convert(VectorOperators.I2F, 0).reinterpretAsFloats().mul(0x1p-24f)
                .reinterpretAsInts();
        bits = bits.blend(subnormal, magnitude.compare(VectorOperators.LT, 0x400));
        bits = bits.blend(magnitude.lanewise(VectorOperators.LSHL, 13).or(INF_BITS),
                magnitude.compare(VectorOperators.GE, 0x7C00));
        return bits.or(h.and(0x8000).lanewise(VectorOperators.LSHL, 16)).reinterpretAsFloats();
    }

    /** N 16-bit elements from {@code index}, sign-extended to int lanes. */
    private static IntVector widen(MemorySegment src, long index) {
        return (IntVector) ShortVector.fromMemorySegment(S, src, index * 2, LITTLE_ENDIAN).convertShape(VectorOperators.S2I, I, 0);
    }

    /** N bytes from {@code index}, sign-extended to int lanes (the users mask the bits they need). */
    private static IntVector loadBytes(MemorySegment src, long index) {
        return (IntVector) ByteVector.fromMemorySegment(B, src, index, LITTLE_ENDIAN).convertShape(VectorOperators.B2I, I, 0);
    }

    /** The low byte of each lane, N bytes at {@code index}. */
    private static void storeBytes(IntVector v, MemorySegment dst, long index) {
        v.convertShape(VectorOperators.I2B, B, 0).reinterpretAsBytes().intoMemorySegment(dst, index, LITTLE_ENDIAN);
    }

    /** N floats as BF16 (nearest even) or F32 at element {@code index}, NaN canonical as {@link QuantMath#writeDequantized}. */
    private static void store(FloatVector v, DType outType, MemorySegment dst, long index) {
        if (outType == DType.F32) {
            v.blend(Float.NaN, v.test(VectorOperators.IS_NAN)).intoMemorySegment(dst, index * 4, LITTLE_ENDIAN);
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

    /**
     * Floats of E4M3 bytes (in the low 8 bits of int lanes) as {@link FloatFormats#e4m3ToFloat}. No
     * arithmetic on subnormal floats: x86 takes a microcode assist, a hundred cycles, for each.
     */
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
     *
     * <p>The sign comes from the bits, without a mask: a float mask cast to int lanes and used in a
     * masked OR fell back to Java code (boxing, garbage collections) in exports, though not in the
     * benchmark.
     */
    private static IntVector nvfp4CodeLanes(FloatVector x) {
        IntVector bits = x.reinterpretAsInts();
        IntVector a = bits.and(ABS_MASK);
        IntVector normal = a.add(a.lanewise(VectorOperators.LSHR, 22).and(1)).add(0x1FFFFF)
                .lanewise(VectorOperators.LSHR, 22).sub(252).min(7);
        IntVector small = a.reinterpretAsFloats().add(0x1p22f).reinterpretAsInts().sub(Float.floatToRawIntBits(0x1p22f));
        IntVector code = normal.blend(small, a.compare(VectorOperators.LT, Float.floatToRawIntBits(1.0f)));
        // x < 0: the sign bit set in bits and in bits - 1 (which clears it for -0 alone).
        return code.or(bits.sub(1).and(bits).lanewise(VectorOperators.LSHR, 28).and(8));
    }

    /** mxfp4's E2M1 codes: ties toward zero, sign unless x > 0 (zeros are 0x8); masks avoided as in nvfp4's. */
    private static IntVector mxfp4CodeLanes(FloatVector x) {
        IntVector bits = x.reinterpretAsInts();
        IntVector a = bits.and(ABS_MASK);
        IntVector normal = a.add(0x1FFFFF).lanewise(VectorOperators.LSHR, 22).sub(252).min(7);
        // |x| > 0.25 and |x| > 0.75, each as the sign of the difference of non-negative float bits.
        IntVector small = IntVector.broadcast(I, Float.floatToRawIntBits(0.25f)).sub(a).lanewise(VectorOperators.LSHR, 31)
                .add(IntVector.broadcast(I, Float.floatToRawIntBits(0.75f)).sub(a).lanewise(VectorOperators.LSHR, 31));
        IntVector code = normal.blend(small, a.compare(VectorOperators.LT, Float.floatToRawIntBits(1.0f)));
        // x <= 0: the sign bit set in bits or in bits - 1 (which sets it for +0 alone).
        return code.or(bits.sub(1).or(bits).lanewise(VectorOperators.LSHR, 28).and(8));
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

    private static int[] strided(int first) {
        int[] a = new int[N];
        for (int i = 0; i < N; i++) {
            a[i] = first + 2 * i;
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

    /**
     * For two vectors of L lanes whose runs fill g lanes each, in order: output lane i belongs to run
     * i / (g/2) of the pair (the first vector's L/g runs, then the second's), and takes that run's lane
     * i % (g/2) (first half) or g/2 more (second half).
     */
    private static ShortVector foldIndices(int g, int half) {
        int lanes = SW.length();
        short[] indices = new short[lanes];
        int perVector = lanes / g;
        for (int i = 0; i < lanes; i++) {
            int q = i / (g / 2);
            int base = (q < perVector ? 0 : lanes) + q % perVector * g;
            indices[i] = (short) (base + i % (g / 2) + half * (g / 2));
        }
        return ShortVector.fromArray(SW, indices, 0);
    }

    private static IntVector[] table(java.util.function.IntToDoubleFunction value) {
        int[] bits = new int[2 * N];
        for (int code = 0; code < 16; code++) {
            bits[code] = Float.floatToRawIntBits((float) value.applyAsDouble(code));
        }
        return new IntVector[] {IntVector.fromArray(I, bits, 0), IntVector.fromArray(I, bits, N)};
    }
}
