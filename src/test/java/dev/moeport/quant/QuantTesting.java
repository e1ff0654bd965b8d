package dev.moeport.quant;

import static org.junit.jupiter.api.Assertions.fail;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import dev.moeport.tensor.DType;
import dev.moeport.tensor.Shape;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.List;
import java.util.stream.Stream;

/** What the quantization tests share: both kernels, output buffers, byte comparisons with a useful message. */
final class QuantTesting {
    private QuantTesting() {}

    /** Both kernels' names: tests run for each, the Panama one skipped where it cannot run. */
    static final List<String> KERNELS = List.of("scalar", "panama");

    static Stream<String> kernelNames() {
        return KERNELS.stream();
    }

    /** The Panama kernel, or null where it cannot run (no Vector API, or vectors narrower than 256 bits). */
    static final QuantKernel PANAMA = panamaIfSupported();
    /** Why {@link #PANAMA} is null. */
    private static String panamaMissing;

    private static QuantKernel panamaIfSupported() {
        try {
            return QuantKernels.panama();
        } catch (IllegalStateException e) {
            panamaMissing = e.getMessage();
            return null;
        }
    }

    /** The kernel of this name; a test of the Panama kernel where it cannot run is skipped, saying why. */
    static QuantKernel kernel(String name) {
        return switch (name) {
            case "scalar" -> QuantKernels.scalar();
            case "panama" -> panama();
            default -> throw new IllegalArgumentException(name);
        };
    }

    /** The Panama kernel; a test that needs it where it cannot run is skipped, saying why. */
    static QuantKernel panama() {
        assumeTrue(PANAMA != null, () -> "the Panama kernel cannot run here: " + panamaMissing);
        return PANAMA;
    }

    /** Outputs of one quantize call: weight and scale segments sized for {@code [rows, cols]}. */
    record Quantized(MemorySegment weight, MemorySegment scale) {
        static Quantized allocate(Arena arena, QuantFormat format, long rows, long cols) {
            Shape shape = Shape.of(rows, cols);
            long weightBytes = format.weightType().byteSize(format.weightShape(shape).numel());
            long scaleBytes = format.scaleIsTensorScale() ? 0 : format.scaleType().byteSize(format.scaleShape(shape).numel());
            // Odd sizes on purpose: the kernels must not depend on alignment.
            return new Quantized(arena.allocate(weightBytes + 1, 1).asSlice(1),
                    arena.allocate(scaleBytes + 1, 1).asSlice(1));
        }
    }

    /**
     * Quantizes {@code rows} rows in chunks of {@code chunkRows} (rounded up to the format's row
     * granularity), each chunk a separate call writing its share of the outputs.
     */
    static Quantized quantizeInChunks(Arena arena, QuantKernel kernel, QuantFormat format, MemorySegment src,
                                      DType dtype, long rows, long cols, float tensorScale, long chunkRows) {
        Quantized out = Quantized.allocate(arena, format, rows, cols);
        long step = Math.max(format.rowGranularity(),
                (chunkRows + format.rowGranularity() - 1) / format.rowGranularity() * format.rowGranularity());
        long weightOffset = 0;
        long scaleOffset = 0;
        for (long r = 0; r < rows; r += step) {
            long n = Math.min(step, rows - r);
            Quantized part = Quantized.allocate(arena, format, n, cols);
            kernel.quantize(format, src.asSlice(r * cols * dtype.byteWidth(), n * cols * dtype.byteWidth()), dtype, n, cols,
                    tensorScale, part.weight(), part.scale());
            MemorySegment.copy(part.weight(), 0, out.weight(), weightOffset, part.weight().byteSize());
            MemorySegment.copy(part.scale(), 0, out.scale(), scaleOffset, part.scale().byteSize());
            weightOffset += part.weight().byteSize();
            scaleOffset += part.scale().byteSize();
        }
        return out;
    }

    /** Fails naming the first differing byte. */
    static void assertSameBytes(String what, MemorySegment expected, MemorySegment actual) {
        if (expected.byteSize() != actual.byteSize()) {
            fail(what + ": " + actual.byteSize() + " bytes, expected " + expected.byteSize());
        }
        long at = expected.mismatch(actual);
        if (at >= 0) {
            fail(String.format("%s: byte %d is 0x%02x, expected 0x%02x", what, at,
                    actual.get(ValueLayout.JAVA_BYTE, at) & 0xFF, expected.get(ValueLayout.JAVA_BYTE, at) & 0xFF));
        }
    }
}
