package dev.moeport.exec;

import static org.junit.jupiter.api.Assertions.assertNotSame;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertTimeoutPreemptively;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import com.sun.management.ThreadMXBean;
import dev.moeport.quant.QuantFormat;
import dev.moeport.quant.QuantKernel;
import dev.moeport.quant.QuantKernels;
import dev.moeport.tensor.DType;
import dev.moeport.tensor.FloatFormats;
import dev.moeport.tensor.Shape;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.management.ManagementFactory;
import java.time.Duration;
import org.junit.jupiter.api.Test;

/**
 * The warm-up before large quantizing runs works for every format and source dtype, and ends by its deadline; it ends
 * early only once the kernels run as C2 compiles them; started ahead by a command and again by its run, it runs once.
 */
class KernelWarmUpTest {
    @Test
    void everyFormatAndSourceDtypeWarmsUpWithinItsLimit() {
        for (QuantFormat format : QuantFormat.values()) {
            for (DType dtype : new DType[] {DType.BF16, DType.F16, DType.F32}) {
                // a limit of 50 ms: the time it takes is the kernels' on a small matrix, checked here not to throw
                assertTimeoutPreemptively(Duration.ofSeconds(20), () -> KernelWarmUp.run(QuantKernels.get(), format, dtype, 50_000_000L),
                        format + " from " + dtype);
            }
        }
    }

    @Test
    void anEarlyEndLeavesTheKernelsOffTheVectorApisFallback() {
        // The Vector API's Java fallback (the interpreter's and C1's) makes an object for every vector: a 256 x 1024
        // matrix quantized so allocates megabytes, C2's code none but its own few arrays.
        ThreadMXBean threads = (ThreadMXBean) ManagementFactory.getThreadMXBean();
        QuantKernel kernel = QuantKernels.get();
        long limit = 60_000_000_000L;
        long start = System.nanoTime();
        KernelWarmUp.run(kernel, QuantFormat.NVFP4, DType.BF16, limit);
        assumeTrue(System.nanoTime() - start < limit, "C2 did not compile the kernels within a minute");
        int rows = 256, cols = 1024;
        Shape shape = Shape.of(rows, cols);
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment src = arena.allocate((long) rows * cols * 2);
            for (long i = 0; i < (long) rows * cols; i++) {
                FloatFormats.write(src, DType.BF16, i, (float) Math.cos(i));
            }
            MemorySegment weight = arena.allocate(QuantFormat.NVFP4.weightType().byteSize(QuantFormat.NVFP4.weightShape(shape).numel()));
            MemorySegment scale = arena.allocate(QuantFormat.NVFP4.scaleType().byteSize(QuantFormat.NVFP4.scaleShape(shape).numel()));
            long allocated = threads.getCurrentThreadAllocatedBytes();
            float amax = kernel.amax(src, DType.BF16, (long) rows * cols);
            kernel.quantize(QuantFormat.NVFP4, src, DType.BF16, rows, cols, QuantFormat.NVFP4.tensorScale(amax), weight, scale);
            long bytes = threads.getCurrentThreadAllocatedBytes() - allocated;
            assertTrue(bytes < 256 << 10, "the warm-up ended with the kernels allocating " + bytes + " bytes for a 256 x 1024 matrix");
        }
    }

    @Test
    void aWarmUpStartedAheadIsTheOneTheRunWaitsFor() throws InterruptedException {
        Thread ahead = KernelWarmUp.inBackground(QuantKernels.get(), QuantFormat.MXFP8, DType.F16);
        assertSame(ahead, KernelWarmUp.inBackground(QuantKernels.get(), QuantFormat.MXFP8, DType.F16));
        Thread other = KernelWarmUp.inBackground(QuantKernels.get(), QuantFormat.MXFP8, DType.BF16);
        assertNotSame(ahead, other);
        ahead.join();
        other.join();
    }
}
