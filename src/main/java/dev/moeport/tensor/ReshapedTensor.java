package dev.moeport.tensor;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;

/**
 * A tensor seen with another shape of the same element order: either with the same outermost dimension
 * (GPT-OSS's MXFP4 blocks {@code [E, rows, in/32, 16]} as packed rows {@code [E, rows, in/2]}), where
 * narrowing and selecting pass through to the source, or as a single entry of a new outermost dimension
 * ({@code [n]} as one row {@code [1, n]}), or a single value as a 0-d tensor (llm-compressor's per-tensor
 * scale {@code [1]} as {@code []}).
 */
public record ReshapedTensor(Tensor source, Shape shape) implements Tensor {

    public ReshapedTensor {
        boolean sameOuter = shape.rank() > 0 && source.rank() > 0 && shape.dim(0) == source.shape().dim(0);
        if (shape.numel() != source.numel() || !(sameOuter || wrapsOne(shape, source) || shape.rank() == 0)) {
            throw new IllegalArgumentException(source.where() + ": cannot see " + source.shape() + " as " + shape);
        }
    }

    /** {@code t} as the single row of a new outermost dimension. */
    public static ReshapedTensor asOneRow(Tensor t) {
        return new ReshapedTensor(t, t.shape().prepend(1));
    }

    private static boolean wrapsOne(Shape shape, Tensor source) {
        return shape.rank() == source.rank() + 1 && shape.dim(0) == 1 && shape.dropFirst().equals(source.shape());
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
    public long storedBytes() {
        return source.storedBytes();
    }

    @Override
    public boolean decodes() {
        return source.decodes();
    }

    @Override
    public String transform() {
        return source.transform();
    }

    @Override
    public Tensor narrow(long start, long count, String newName) {
        requireRows();
        if (wrapsOne(shape, source)) {
            if (start != 0 || count != 1) {
                throw new IllegalArgumentException(where() + ": rows [" + start + ", " + (start + count) + ") of a single row");
            }
            return this;
        }
        return new ReshapedTensor(source.narrow(start, count, newName), shape.with(0, count));
    }

    @Override
    public Tensor select(long index, String newName) {
        requireRows();
        if (wrapsOne(shape, source)) {
            if (index != 0) {
                throw new IllegalArgumentException(where() + ": row " + index + " of a single row");
            }
            return source;
        }
        Tensor one = source.select(index, newName);
        Shape rest = shape.dropFirst();
        return rest.rank() == 0 ? one : new ReshapedTensor(one, rest);
    }

    private void requireRows() {
        if (shape.rank() == 0) {
            throw new IllegalArgumentException(where() + ": a single value has no rows");
        }
    }

    @Override
    public MemorySegment bytes(Arena scratch) {
        return source.bytes(scratch);
    }
}
