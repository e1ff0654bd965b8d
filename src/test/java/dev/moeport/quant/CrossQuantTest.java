package dev.moeport.quant;

import static dev.moeport.quant.QuantTesting.assertSameBytes;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;

import dev.moeport.tensor.DType;
import dev.moeport.tensor.FloatFormats;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.stream.Stream;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.EnumSource;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * The Panama kernel against the scalar reference on what the golden files do not reach: every input
 * dtype, awkward shapes (one row, tails shorter than a vector, partial blocks), values on and next to
 * every E2M1 and E4M3 rounding boundary, subnormals, huge and tiny blocks side by side, signed zeros,
 * float32 block maxima just above powers of two (E8M0 exponents), and NaN/infinity positions.
 */
class CrossQuantTest {
    private static final QuantKernel SCALAR = QuantKernels.scalar();
    private static final DType[] DTYPES = {DType.BF16, DType.F16, DType.F32};
    /** rows x cols: empty, single rows, sub-vector tails, odd multiples of blocks, a partial 128-row band. */
    private static final int[][] SHAPES = {
        {0, 16}, {2, 0}, {1, 1}, {1, 15}, {1, 16}, {2, 17}, {3, 31}, {2, 32}, {3, 33}, {2, 48}, {4, 96}, {2, 100},
        {3, 2048}, {2, 4097}, {7, 160}, {130, 200},
    };

    /** What the values of a test tensor look like. */
    enum Kind {
        /** Gaussian, like trained weights. */
        NORMAL,
        /** Each 16-element run at its own random power of two, from subnormal to near overflow, with zeros. */
        WIDE,
        /** Runs led by +-6 (so nvfp4 at scale_2 0.25 and mxfp4 divide by exactly 1) of E2M1 bounds, ties and neighbours. */
        E2M1_EDGES,
        /** Runs led by +-448 (mxfp8 multiplies by exactly 1) of E4M3 midpoints, neighbours and subnormals. */
        E4M3_EDGES,
        /** 32-element blocks whose maximum is 6 or 448 times 2^k just above a power of two (E8M0 rounding). */
        LOG2_EDGES,
        /** Zeros of both signs, with an occasional small value. */
        ZEROS
    }

    static Stream<Arguments> formatsAndDtypesAndKernels() {
        return formatsAndDtypes().flatMap(a -> QuantTesting.KERNELS.stream().map(k -> Arguments.of(a.get()[0], a.get()[1], k)));
    }

    static Stream<Arguments> formatsAndDtypes() {
        List<Arguments> list = new ArrayList<>();
        for (QuantFormat f : QuantFormat.values()) {
            for (DType d : DTYPES) {
                list.add(Arguments.of(f, d));
            }
        }
        return list.stream();
    }

    @ParameterizedTest(name = "{0} {1}")
    @MethodSource("formatsAndDtypes")
    void panamaQuantizesLikeScalar(QuantFormat format, DType dtype) {
        QuantKernel panama = QuantTesting.panama();
        Random rnd = new Random(31L * format.ordinal() + dtype.ordinal());
        try (Arena arena = Arena.ofConfined()) {
            for (Kind kind : Kind.values()) {
                for (int[] shape : SHAPES) {
                    int rows = shape[0];
                    int cols = shape[1];
                    if (format == QuantFormat.INT4_G128 && rows % 2 != 0) {
                        continue;
                    }
                    MemorySegment src = encode(arena, dtype, values(kind, dtype, rows * cols, rnd));
                    for (float tensorScale : tensorScales(format, kind, src, dtype, rows * cols)) {
                        String what = format.cliName() + " " + dtype + " " + kind + " [" + rows + ", " + cols
                                + "] tensorScale " + tensorScale;
                        QuantTesting.Quantized expected = QuantTesting.quantizeInChunks(arena, SCALAR, format, src, dtype,
                                rows, cols, tensorScale, rows);
                        for (long chunk : new long[] {rows, 1, 3}) {
                            QuantTesting.Quantized actual = QuantTesting.quantizeInChunks(arena, panama, format, src, dtype,
                                    rows, cols, tensorScale, chunk);
                            assertSameBytes(what + " weight, chunks of " + chunk, expected.weight(), actual.weight());
                            assertSameBytes(what + " scale, chunks of " + chunk, expected.scale(), actual.scale());
                        }
                    }
                }
            }
        }
    }

    /** The tensor's own scale, plus ones that push block scales and codes to their limits. */
    private static float[] tensorScales(QuantFormat format, Kind kind, MemorySegment src, DType dtype, long count) {
        if (!format.usesTensorAmax()) {
            return new float[] {0};
        }
        float amax = SCALAR.amax(src, dtype, count);
        float own = amax > 0 ? format.tensorScale(amax) : 1.0f;
        if (kind == Kind.E2M1_EDGES && format == QuantFormat.NVFP4) {
            return new float[] {0.25f, own};
        }
        if (kind == Kind.E4M3_EDGES && format == QuantFormat.FP8) {
            return new float[] {1.0f, own};
        }
        // A calibrated amax far below the weights' (block scales clamp at 448, fp8 overflows to NaN) or far above.
        List<Float> usable = new ArrayList<>();
        for (float s : new float[] {own, own / 64, own * 4096}) {
            if (s > 0 && s < Float.POSITIVE_INFINITY) {
                usable.add(s);
            }
        }
        float[] a = new float[usable.size()];
        for (int i = 0; i < a.length; i++) {
            a[i] = usable.get(i);
        }
        return a;
    }

    @ParameterizedTest
    @EnumSource(value = QuantFormat.class, names = {"FP8", "NVFP4", "MXFP4", "MXFP8"})
    void panamaDequantizesLikeScalar(QuantFormat format) {
        QuantKernel panama = QuantTesting.panama();
        Random rnd = new Random(format.ordinal());
        try (Arena arena = Arena.ofConfined()) {
            for (int[] shape : SHAPES) {
                int rows = shape[0];
                int cols = shape[1];
                // Any bytes at all, NaN codes and negative or NaN block scales included.
                QuantTesting.Quantized q = QuantTesting.Quantized.allocate(arena, format, rows, cols);
                fill(q.weight(), rnd);
                fill(q.scale(), rnd);
                for (float tensorScale : new float[] {0.01f, 3.7e-5f, 1e30f, -0.5f, Float.NaN}) {
                    for (DType out : new DType[] {DType.BF16, DType.F32}) {
                        MemorySegment expected = arena.allocate(out.byteSize((long) rows * cols));
                        MemorySegment actual = arena.allocate(out.byteSize((long) rows * cols) + 1).asSlice(1);
                        SCALAR.dequantize(format, q.weight(), q.scale(), tensorScale, rows, cols, out, expected);
                        panama.dequantize(format, q.weight(), q.scale(), tensorScale, rows, cols, out, actual);
                        assertSameBytes(format.cliName() + " [" + rows + ", " + cols + "] " + tensorScale + " to " + out,
                                expected, actual);
                    }
                }
            }
        }
    }

    @ParameterizedTest
    @EnumSource(value = DType.class, names = {"BF16", "F16", "F32"})
    void panamaAmaxIsScalarAmax(DType dtype) {
        QuantKernel panama = QuantTesting.panama();
        Random rnd = new Random(dtype.ordinal());
        try (Arena arena = Arena.ofConfined()) {
            for (Kind kind : Kind.values()) {
                for (int count : new int[] {0, 1, 7, 16, 31, 33, 64, 65, 129, 1000, 4097}) {
                    MemorySegment src = encode(arena, dtype, values(kind, dtype, count, rnd));
                    assertEquals(Float.floatToRawIntBits(SCALAR.amax(src, dtype, count)),
                            Float.floatToRawIntBits(panama.amax(src, dtype, count)), kind + " " + count);
                }
            }
        }
    }

    /** NaN and infinities, alone or several, anywhere: each kernel names the first, for amax and every format. */
    @ParameterizedTest(name = "{0} {1} {2}")
    @MethodSource("formatsAndDtypesAndKernels")
    void nonFiniteValuesAreReportedAtTheFirstIndex(QuantFormat format, DType dtype, String kernelName) {
        QuantKernel kernel = QuantTesting.kernel(kernelName);
        Random rnd = new Random(7L * format.ordinal() + dtype.ordinal());
        float[] bad = {Float.NaN, Float.POSITIVE_INFINITY, Float.NEGATIVE_INFINITY};
        try (Arena arena = Arena.ofConfined()) {
            for (int[] shape : new int[][] {{1, 1}, {2, 17}, {4, 96}, {2, 4097}, {130, 200}}) {
                int rows = shape[0];
                int cols = shape[1];
                int count = rows * cols;
                for (int trial = 0; trial < 6; trial++) {
                    float[] v = values(Kind.NORMAL, dtype, count, rnd);
                    int first = count;
                    int places = 1 + rnd.nextInt(3);
                    for (int k = 0; k < places; k++) {
                        // The last element, a second row's, or anywhere.
                        int at = switch (trial) {
                            case 0 -> count - 1;
                            case 1 -> Math.min(count - 1, cols + rnd.nextInt(cols));
                            default -> rnd.nextInt(count);
                        };
                        v[at] = bad[rnd.nextInt(bad.length)];
                        first = Math.min(first, at);
                    }
                    MemorySegment src = encode(arena, dtype, v);
                    String what = format.cliName() + " " + dtype + " [" + rows + ", " + cols + "]";
                    assertEquals(first, assertThrows(NonFiniteValueException.class, () -> kernel.amax(src, dtype, count)).index(),
                            what + " amax");
                    if (format == QuantFormat.INT4_G128 && rows % 2 != 0) {
                        continue;
                    }
                    QuantTesting.Quantized out = QuantTesting.Quantized.allocate(arena, format, rows, cols);
                    assertEquals(first, assertThrows(NonFiniteValueException.class,
                            () -> kernel.quantize(format, src, dtype, rows, cols, 0.5f, out.weight(), out.scale())).index(), what);
                }
            }
        }
    }

    @ParameterizedTest
    @MethodSource("dev.moeport.quant.QuantTesting#kernelNames")
    void refusesWhatItCannotQuantize(String kernel) {
        QuantKernel k = QuantTesting.kernel(kernel);
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment src = arena.allocate(3 * 128 * 2);
            QuantTesting.Quantized out = QuantTesting.Quantized.allocate(arena, QuantFormat.INT4_G128, 4, 128);
            assertThrows(IllegalArgumentException.class,
                    () -> k.quantize(QuantFormat.INT4_G128, src, DType.BF16, 3, 128, 0, out.weight(), out.scale()));
            for (float scale : new float[] {0, -1, Float.NaN, Float.POSITIVE_INFINITY}) {
                assertThrows(IllegalArgumentException.class,
                        () -> k.quantize(QuantFormat.NVFP4, src, DType.BF16, 3, 128, scale, out.weight(), out.scale()));
            }
            assertThrows(IllegalArgumentException.class,
                    () -> k.quantize(QuantFormat.MXFP8, src, DType.BF16, 3, 128, 0, out.weight(), out.scale().asSlice(0, 2)));
            assertThrows(UnsupportedOperationException.class,
                    () -> k.dequantize(QuantFormat.INT8_WO, src, src, 1, 3, 128, DType.F32, src));
        }
    }

    // ---------------------------------------------------------------------------------------------
    // test data

    /** {@code count} values of the kind, each exactly representable in {@code dtype}. */
    static float[] values(Kind kind, DType dtype, int count, Random rnd) {
        float[] v = new float[count];
        int maxExp = dtype == DType.F16 ? 15 : 127;
        int minExp = dtype == DType.F16 ? -24 : dtype == DType.BF16 ? -133 : -149;
        int runExp = 0;
        for (int i = 0; i < count; i++) {
            if (i % 16 == 0) {
                runExp = minExp + rnd.nextInt(maxExp - minExp + 1);
            }
            v[i] = switch (kind) {
                case NORMAL -> (float) rnd.nextGaussian() * 0.02f;
                case WIDE -> rnd.nextInt(8) == 0 ? (rnd.nextBoolean() ? 0.0f : -0.0f)
                        : Math.scalb((float) rnd.nextGaussian(), runExp);
                case E2M1_EDGES -> i % 16 == 0 ? signed(6.0f, rnd) : signed(pick(E2M1_EDGE_VALUES, dtype, rnd), rnd);
                case E4M3_EDGES -> i % 32 == 0 ? signed(448.0f, rnd) : signed(pick(E4M3_EDGE_VALUES, dtype, rnd), rnd);
                case LOG2_EDGES -> {
                    if (i % 32 == 0) {
                        float base = rnd.nextBoolean() ? 6.0f : 448.0f;
                        int k = dtype == DType.F16 ? -20 + rnd.nextInt(26) : -140 + rnd.nextInt(250);
                        float top = Math.scalb(base, k);
                        yield signed(Float.intBitsToFloat(Float.floatToRawIntBits(top) + rnd.nextInt(48)), rnd);
                    }
                    yield (float) rnd.nextGaussian() * 1e-3f;
                }
                case ZEROS -> rnd.nextInt(50) == 0 ? (float) rnd.nextGaussian() : (rnd.nextBoolean() ? 0.0f : -0.0f);
            };
            v[i] = representable(dtype, v[i]);
        }
        return v;
    }

    /** The E2M1 bounds (ties), the grid values, and for each its float neighbours. */
    private static final float[] E2M1_EDGE_VALUES = {0, 0.25f, 0.5f, 0.75f, 1, 1.25f, 1.5f, 1.75f, 2, 2.5f, 3, 3.5f, 4, 5, 6,
        1e-30f, 0.1f};
    /** E4M3 values and the midpoints between neighbours, from the subnormals up to 480. */
    private static final float[] E4M3_EDGE_VALUES = e4m3Edges();

    private static float[] e4m3Edges() {
        List<Float> list = new ArrayList<>();
        for (int code = 0; code < 0x7E; code++) {
            float v = FloatFormats.e4m3ToFloat((byte) code);
            float next = FloatFormats.e4m3ToFloat((byte) (code + 1));
            list.add(v);
            list.add((v + next) / 2);
        }
        list.add(448.0f);
        list.add(464.0f);
        list.add(472.0f);
        list.add(480.0f);
        list.add(0x1p-10f);
        list.add(0x1p-11f);
        float[] a = new float[list.size()];
        for (int i = 0; i < a.length; i++) {
            a[i] = list.get(i);
        }
        return a;
    }

    /** One of {@code values}, or its next representable neighbour up or down in {@code dtype}. */
    private static float pick(float[] values, DType dtype, Random rnd) {
        float v = representable(dtype, values[rnd.nextInt(values.length)]);
        return switch (rnd.nextInt(3)) {
            case 0 -> v;
            case 1 -> neighbour(dtype, v, true);
            default -> neighbour(dtype, v, false);
        };
    }

    private static float neighbour(DType dtype, float v, boolean up) {
        int sign = up ? 1 : -1;
        return switch (dtype) {
            case BF16 -> v == 0 && !up ? 0 : FloatFormats.bf16ToFloat((short) (FloatFormats.floatToBf16(v) + sign));
            case F16 -> v == 0 && !up ? 0 : FloatFormats.f16ToFloat((short) (FloatFormats.floatToF16(v) + sign));
            default -> up ? Math.nextUp(v) : Math.nextDown(v);
        };
    }

    private static float signed(float v, Random rnd) {
        return rnd.nextBoolean() ? v : -v;
    }

    /** v rounded into the dtype, kept finite (F16 overflows early). */
    private static float representable(DType dtype, float v) {
        float r = FloatFormats.roundTo(dtype, v);
        return Float.isInfinite(r) ? Math.copySign(65504.0f, v) : r;
    }

    private static MemorySegment encode(Arena arena, DType dtype, float[] v) {
        // One byte off alignment, as a tensor in a mapped file may be.
        MemorySegment s = arena.allocate(dtype.byteSize(v.length) + 1, 1).asSlice(1);
        for (int i = 0; i < v.length; i++) {
            FloatFormats.write(s, dtype, i, v[i]);
        }
        return s;
    }

    private static void fill(MemorySegment s, Random rnd) {
        byte[] b = new byte[(int) s.byteSize()];
        rnd.nextBytes(b);
        MemorySegment.copy(MemorySegment.ofArray(b), 0, s, 0, b.length);
    }
}
