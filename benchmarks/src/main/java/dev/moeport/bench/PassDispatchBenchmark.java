package dev.moeport.bench;

import dev.moeport.quant.QuantFormat;
import dev.moeport.quant.QuantKernel;
import dev.moeport.quant.QuantKernels;
import dev.moeport.tensor.DType;
import dev.moeport.tensor.Shape;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.concurrent.TimeUnit;
import org.openjdk.jmh.annotations.Benchmark;
import org.openjdk.jmh.annotations.BenchmarkMode;
import org.openjdk.jmh.annotations.Fork;
import org.openjdk.jmh.annotations.Level;
import org.openjdk.jmh.annotations.Mode;
import org.openjdk.jmh.annotations.OutputTimeUnit;
import org.openjdk.jmh.annotations.Param;
import org.openjdk.jmh.annotations.Scope;
import org.openjdk.jmh.annotations.Setup;
import org.openjdk.jmh.annotations.State;
import org.openjdk.jmh.annotations.TearDown;

/**
 * The Panama kernel's passes called through its MethodHandle table or directly, each in JVMs of its own
 * (the choice is read once, when the kernel class loads), on the same 4096 x 4096 BF16 weight.
 */
@BenchmarkMode(Mode.AverageTime)
@OutputTimeUnit(TimeUnit.MILLISECONDS)
public class PassDispatchBenchmark {
    @State(Scope.Benchmark)
    public static class Case {
        @Param({"fp8", "fp8_pc", "fp8_pb", "nvfp4", "mxfp4", "mxfp8", "int8_wo", "int4_g128", "dequant-nvfp4"})
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
        public void setup(QuantBenchmark.Weight w) {
            kernel = QuantKernels.panama();
            dequantize = op.startsWith("dequant-");
            format = QuantFormat.fromCliName(dequantize ? op.substring("dequant-".length()) : op);
            Shape shape = Shape.of(QuantBenchmark.ROWS, QuantBenchmark.COLS);
            arena = Arena.ofShared();
            weight = arena.allocate(format.weightType().byteSize(format.weightShape(shape).numel()), 64);
            scale = arena.allocate(Math.max(4, format.scaleType().byteSize(format.scaleShape(shape).numel())), 64);
            out = arena.allocate(QuantBenchmark.INPUT_BYTES, 64);
            tensorScale = format.tensorScale(kernel.amax(w.bf16, DType.BF16, (long) QuantBenchmark.ROWS * QuantBenchmark.COLS));
            kernel.quantize(format, w.bf16, DType.BF16, QuantBenchmark.ROWS, QuantBenchmark.COLS, tensorScale, weight, scale);
        }

        @TearDown(Level.Trial)
        public void tearDown() {
            arena.close();
        }
    }

    private static void run(QuantBenchmark.Weight w, Case c) {
        if (c.dequantize) {
            c.kernel.dequantize(c.format, c.weight, c.scale, c.tensorScale, QuantBenchmark.ROWS, QuantBenchmark.COLS, DType.BF16, c.out);
        } else {
            c.kernel.quantize(c.format, w.bf16, DType.BF16, QuantBenchmark.ROWS, QuantBenchmark.COLS, c.tensorScale, c.weight, c.scale);
        }
    }

    @Benchmark
    @Fork(jvmArgsAppend = {"--add-modules", "jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED", "-Xmx2g", "-Dmoeport.panama.passTable=true"})
    public void table(QuantBenchmark.Weight w, Case c) {
        run(w, c);
    }

    @Benchmark
    @Fork(jvmArgsAppend = {"--add-modules", "jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED", "-Xmx2g", "-Dmoeport.panama.passTable=false"})
    public void direct(QuantBenchmark.Weight w, Case c) {
        run(w, c);
    }
}
