package dev.moeport.tensor;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;

/**
 * A tensor of a checkpoint, whatever its on-disk format. Narrowing along the outermost dimension is
 * free (no byte moves); {@link #bytes} gives the contiguous row-major bytes: a zero-copy slice of a
 * mapped file where the format stores them contiguously ({@link TensorView}), otherwise the pieces
 * assembled into memory from {@code scratch} (never the Java heap).
 */
public interface Tensor {
    String name();

    DType dtype();

    Shape shape();

    /** "tensor 'x' in file" for error messages. */
    String where();

    /** {@code count} entries of the outermost dimension from {@code start}. */
    Tensor narrow(long start, long count, String newName);

    /** Entry {@code index} of the outermost dimension, without that dimension. */
    Tensor select(long index, String newName);

    MemorySegment bytes(Arena scratch);

    default long numel() {
        return shape().numel();
    }

    default long byteSize() {
        return dtype().byteSize(numel());
    }

    default int rank() {
        return shape().rank();
    }

    /** Bytes read from storage to make this tensor's bytes: a decoded tensor reads its packed bytes and scales. */
    default long storedBytes() {
        return byteSize();
    }

    /** What is done to the stored bytes besides reading them ({@code decode nvfp4}, {@code transpose}), or null. */
    default String transform() {
        return null;
    }

    /** Whether {@link #bytes} decodes a quantized tensor (with the quantization kernel). */
    default boolean decodes() {
        return false;
    }

    /** {@code BF16[128, 256]}. */
    default String describe() {
        return dtype() + shape().toString();
    }
}
