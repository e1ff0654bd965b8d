package dev.moeport.tensor;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;

/**
 * A tensor seen with another shape of the same outermost dimension and element order, e.g. GPT-OSS's
 * MXFP4 blocks {@code [E, rows, in/32, 16]} as packed rows {@code [E, rows, in/2]}. Narrowing and
 * selecting along the outermost dimension pass through to the source.
 */
public record ReshapedTensor(Tensor source, Shape shape) implements Tensor {

    public ReshapedTensor {
        if (shape.numel() != source.numel() || shape.rank() == 0 || source.rank() == 0 || shape.dim(0) != source.shape().dim(0)) {
            throw new IllegalArgumentException(source.where() + ": cannot see " + source.shape() + " as " + shape);
        }
    }

    @Override
    public String name() {
        return source.name();
    }

    @Override
    public DType dtype() {
        return source.dtype();
    }

    @Override
    public String where() {
        return source.where();
    }

    @Override
    public Tensor narrow(long start, long count, String newName) {
        return new ReshapedTensor(source.narrow(start, count, newName), shape.with(0, count));
    }

    @Override
    public Tensor select(long index, String newName) {
        Tensor one = source.select(index, newName);
        Shape rest = shape.dropFirst();
        return rest.rank() == 0 ? one : new ReshapedTensor(one, rest);
    }

    @Override
    public MemorySegment bytes(Arena scratch) {
        return source.bytes(scratch);
    }
}
