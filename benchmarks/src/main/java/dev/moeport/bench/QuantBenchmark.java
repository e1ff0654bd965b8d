package dev.moeport.bench;

import dev.moeport.quant.QuantFormat;
import dev.moeport.quant.QuantKernel;
import dev.moeport.quant.QuantKernels;
import dev.moeport.tensor.DType;
import dev.moeport.tensor.FloatFormats;
import dev.moeport.tensor.Shape;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.Random;
import java.util.concurrent.TimeUnit;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;

/**
 * Every kernel on one 4096 x 4096 weight in native memory, BF16 (or F16: {@code benchmarks/run --f16}), one whole-tensor call
 * per operation, beside a plain copy of the same bytes: the copy is the memory-bound ceiling the kernels are compared to.
 */
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MILLISECONDS)
public class QuantBenchmark {
    static final int ROWS = 4096;
    static final int COLS = 4096;
    /** The input bytes every figure is counted against: the 16-bit weight. */
    static final long INPUT_BYTES = 2L * ROWS * COLS;

    @State(Scope.Benchmark)
    public static class Weight {
        /** The weight's dtype: bf16 (the checkpoints') or f16. */
        @Param({"bf16"})
        public String dtype;

        Arena arena;
        DType type;
        MemorySegment input;
        MemorySegment copy;

        @Setup(Level.Trial)
        public void setup() {
            type = switch (dtype) {
                case "bf16" -> DType.BF16;
                case "f16" -> DType.F16;
                default -> throw new IllegalArgumentException("dtype " + dtype + ": bf16 or f16");
            };
            arena = Arena.ofShared();
            input = arena.allocate(INPUT_BYTES, 64);
            copy = arena.allocate(INPUT_BYTES, 64);
            Random rnd = new Random(42);
            for (long i = 0; i < (long) ROWS * COLS; i++) {
                // Trained-weight-like values with a rare outlier.
                float v = (float) rnd.nextGaussian() * 0.02f;
                FloatFormats.write(input, type, i, rnd.nextInt(10_000) == 0 ? v * 50 : v);
            }
        }

        @TearDown(Level.Trial)
        public void tearDown() {
            arena.close();
        }
    }

    @State(Scope.Benchmark)
    public static class Case {
        @Param({"scalar", "panama"})
        public String impl;

        /** amax, a format's quantize, or dequant-FORMAT (to BF16). */
        @Param({"amax", "fp8", "fp8_pc", "fp8_pb", "nvfp4", "mxfp4", "mxfp8", "int8_wo", "int4_g128",
                "dequant-fp8", "dequant-nvfp4", "dequant-mxfp4", "dequant-mxfp8"})
        public String op;

        QuantKernel kernel;
        QuantFormat format;
        boolean dequantize;
        float tensorScale;
        Arena arena;
        MemorySegment weight;
        MemorySegment scale;
        MemorySegment out;

        @Setup(Level.Trial)
        public void setup(Weight w) {
            kernel = impl.equals("scalar") ? QuantKernels.scalar() : QuantKernels.panama();
            if (op.equals("amax")) {
                return;
            }
            dequantize = op.startsWith("dequant-");
            format = QuantFormat.fromCliName(dequantize ? op.substring("dequant-".length()) : op);
            Shape shape = Shape.of(ROWS, COLS);
            arena = Arena.ofShared();
            weight = arena.allocate(format.weightType().byteSize(format.weightShape(shape).numel()), 64);
            scale = arena.allocate(Math.max(4, format.scaleType().byteSize(format.scaleShape(shape).numel())), 64);
            out = arena.allocate(INPUT_BYTES, 64);
            // Formats with only local scales have no tensor scale (and ignore the argument).
            tensorScale = format.usesTensorAmax()
                    ? format.tensorScale(QuantKernels.panama().amax(w.input, w.type, (long) ROWS * COLS)) : 1f;
            if (dequantize) {
                QuantKernels.panama().quantize(format, w.input, w.type, ROWS, COLS, tensorScale, weight, scale);
            }
        }

        @TearDown(Level.Trial)
        public void tearDown() {
            if (arena != null) {
                arena.close();
            }
        }
    }

    @Benchmark
    public void copy(Weight w) {
        MemorySegment.copy(w.input, 0, w.copy, 0, INPUT_BYTES);
    }

    @Benchmark
    public float kernel(Weight w, Case c) {
        if (c.format == null) {
            return c.kernel.amax(w.input, w.type, (long) ROWS * COLS);
        }
        if (c.dequantize) {
            c.kernel.dequantize(c.format, c.weight, c.scale, c.tensorScale, ROWS, COLS, DType.BF16, c.out);
        } else {
            c.kernel.quantize(c.format, w.input, w.type, ROWS, COLS, c.tensorScale, c.weight, c.scale);
        }
        return 0;
    }
}
