package dev.moeport.exec;

import com.sun.management.ThreadMXBean;
import dev.moeport.quant.QuantFormat;
import dev.moeport.quant.QuantKernel;
import dev.moeport.tensor.DType;
import dev.moeport.tensor.FloatFormats;
import dev.moeport.tensor.Shape;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.management.ManagementFactory;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;

/**
 * Runs a format's kernels on a small matrix until C2 has compiled them, before the workers that quantize start.
 * Until C2 compiles a Vector API loop it runs the API's Java fallback, some hundred times slower, and every worker ran it
 * at once, all of them counting in the same profile: on 16 threads the first second of an nvfp4 export moved a third of
 * what the next second did. It runs on a thread of its own, started while the command plans where it can be.
 *
 * <p>It ends when a batch of calls allocates nothing, not when it runs some times faster than the first: the fallback
 * makes an object for every vector, interpreted or compiled by C1, and only C2's intrinsics make none, whereas C1's code
 * runs the first batch twenty times faster already. Stopped at that speed, the workers of a cold export on two cores ran
 * C1's fallback for over a second more, allocating 2.5 GB/s, while the disk idled.
 */
final class KernelWarmUp {
    private KernelWarmUp() {}

    private record Use(QuantKernel kernel, QuantFormat format, DType dtype) {}

    /** The warm-ups this JVM started: compiled code stays compiled, so each runs once. */
    private static final Map<Use, Thread> STARTED = new ConcurrentHashMap<>();

    /** The thread that warms up quantizing {@code dtype} to {@code format}, started by the first call (it may have ended). */
    static Thread inBackground(QuantKernel kernel, QuantFormat format, DType dtype) {
        return STARTED.computeIfAbsent(new Use(kernel, format, dtype), use -> Thread.ofPlatform().daemon().name("moeport-warm-up")
                .start(() -> run(kernel, format, dtype, LIMIT_NANOS)));
    }

    /** Calls between two looks at the clock and at what the thread allocated. */
    private static final int BATCH = 50;
    /** What a batch compiled by C2 may allocate (the fallback: hundreds of kilobytes a call). */
    private static final long COMPILED_BATCH_BYTES = 64 << 10;
    /**
     * It never takes longer than this, whatever the JIT does: some paths allocate a little in C2's code too (most
     * formats warmed up after another in one JVM; F16's nvfp4 path, 194 KB a batch, until F16 was widened to F32 in a
     * pass of its own), and wait here to the end. 1.5 s: the single-format BF16 warm-ups measured end before it (0.5-0.7
     * s on 16 cores, 0.6-1.3 s on 2), and the others wait half a second longer than under the earlier rule's 1 s.
     */
    static final long LIMIT_NANOS = 1_500_000_000L;

    private static final ThreadMXBean THREADS = (ThreadMXBean) ManagementFactory.getThreadMXBean();

    /** Warms up quantizing {@code dtype} to {@code format}, for at most {@code limitNanos}. */
    static void run(QuantKernel kernel, QuantFormat format, DType dtype, long limitNanos) {
        long rows = Math.max(2, format.rowGranularity());
        long cols = 2L * Math.max(128, format.blockSize());
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment src = arena.allocate(rows * cols * dtype.byteWidth(), 64);
            for (long i = 0; i < rows * cols; i++) {
                FloatFormats.write(src, dtype, i, (float) Math.sin(i) * (1 + i % 7));
            }
            Shape shape = Shape.of(rows, cols);
            MemorySegment weight = arena.allocate(Math.max(1, format.weightType().byteSize(format.weightShape(shape).numel())), 64);
            MemorySegment scale = arena.allocate(Math.max(1, format.scaleType().byteSize(format.scaleShape(shape).numel())), 64);
            long start = System.nanoTime();
            boolean counted = THREADS.isThreadAllocatedMemorySupported() && THREADS.isThreadAllocatedMemoryEnabled();
            while (System.nanoTime() - start < limitNanos) {
                long allocated = THREADS.getCurrentThreadAllocatedBytes();
                for (int call = 0; call < BATCH; call++) {
                    float amax = kernel.amax(src, dtype, rows * cols);
                    float scaleOfTensor = format.scaling() == QuantFormat.Scaling.LOCAL ? 0 : format.tensorScale(amax);
                    kernel.quantize(format, src, dtype, rows, cols, scaleOfTensor, weight, scale);
                }
                if (counted && THREADS.getCurrentThreadAllocatedBytes() - allocated <= COMPILED_BATCH_BYTES) {
                    return;
                }
            }
        }
    }
}
