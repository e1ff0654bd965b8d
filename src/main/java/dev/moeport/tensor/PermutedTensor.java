package dev.moeport.tensor;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;

/**
 * A tensor whose elements are another's, reordered: the source viewed as {@code view}, its axes
 * permuted by {@code perm} (output axis i is view axis perm[i]), then seen as {@code shape} (same
 * element order). Narrowing along the outermost output axis is free; {@link #bytes} gathers the
 * elements of the narrowed rows from the source into memory from the caller's arena, so a transposed
 * expert costs one pass over its source, never the heap.
 *
 * @param rowStart first output row (entry of the outermost axis of {@code fullShape}) this view holds
 * @param rowCount output rows this view holds
 */
public record PermutedTensor(String name, Tensor source, Shape view, int[] perm, Shape fullShape, long rowStart, long rowCount)
        implements Tensor {

    public PermutedTensor {
        if (view.numel() != source.numel() || fullShape.numel() != source.numel()) {
            throw new IllegalArgumentException(source.where() + ": cannot view " + source.shape() + " as " + view + " -> " + fullShape);
        }
    }

    /** {@code source} viewed as {@code view}, axes reversed, seen as {@code shape}. */
    public static PermutedTensor reversedAxes(Tensor source, Shape view, Shape shape, String name) {
        int[] perm = new int[view.rank()];
        for (int i = 0; i < perm.length; i++) {
            perm[i] = perm.length - 1 - i;
        }
        return new PermutedTensor(name, source, view, perm, shape, 0, shape.rank() == 0 ? 1 : shape.dim(0));
    }

    @Override
    public DType dtype() {
        return source.dtype();
    }

    @Override
    public Shape shape() {
        return fullShape.rank() == 0 ? fullShape : fullShape.with(0, rowCount);
    }

    @Override
    public String where() {
        return "tensor '" + name + "' (reordered from " + source.where() + ")";
    }

    /** Whether the outermost axis stays in place (a stack of matrices each reordered): narrowing then narrows the source. */
    private boolean keepsOuterAxis() {
        return perm[0] == 0 && view.dim(0) == source.shape().dim(0) && fullShape.dim(0) == view.dim(0) && rowStart == 0
                && rowCount == fullShape.dim(0);
    }

    /** The source's share for this view's rows (a transpose reads the columns that make them). */
    @Override
    public long storedBytes() {
        long rows = fullShape.dim(0);
        return rows == 0 ? 0 : source.storedBytes() / rows * rowCount;
    }

    @Override
    public boolean decodes() {
        return source.decodes();
    }

    @Override
    public String transform() {
        return source.transform() == null ? "transpose" : source.transform() + ", transpose";
    }

    @Override
    public Tensor narrow(long start, long count, String newName) {
        if (start < 0 || count < 0 || start + count > rowCount) {
            throw new IllegalArgumentException(where() + ": rows [" + start + ", " + (start + count) + ") out of " + rowCount);
        }
        if (keepsOuterAxis()) {
            return new PermutedTensor(newName, source.narrow(start, count, source.name()), view.with(0, count), perm,
                    fullShape.with(0, count), 0, count);
        }
        return new PermutedTensor(newName, source, view, perm, fullShape, rowStart + start, count);
    }

    /** One entry of the outermost axis; only for stacks whose outermost axis stays in place (an expert of a stack). */
    @Override
    public Tensor select(long index, String newName) {
        if (!keepsOuterAxis()) {
            throw new UnsupportedOperationException(where() + ": select on a tensor whose outermost axis moves");
        }
        int[] inner = new int[perm.length - 1];
        for (int i = 1; i < perm.length; i++) {
            inner[i - 1] = perm[i] - 1;
        }
        Shape rest = fullShape.dropFirst();
        return new PermutedTensor(newName, source.select(index, source.name() + "[" + index + "]"), view.dropFirst(), inner, rest, 0,
                rest.rank() == 0 ? 1 : rest.dim(0));
    }

    /** Each matrix of a stack {@code [E, rows, cols]} transposed: {@code [E, cols, rows]}. */
    public static PermutedTensor transposedMatrices(Tensor stack, String name) {
        Shape s = stack.shape();
        return new PermutedTensor(name, stack, s, new int[] {0, 2, 1}, Shape.of(s.dim(0), s.dim(2), s.dim(1)), 0, s.dim(0));
    }

    @Override
    public MemorySegment bytes(Arena scratch) {
        int width = dtype().byteWidth();
        MemorySegment src = source.bytes(scratch);
        long rowElements = fullShape.rank() == 0 ? 1 : fullShape.numel() / fullShape.dim(0);
        long first = rowStart * rowElements;
        long count = rowCount * rowElements;
        MemorySegment out = scratch.allocate(count * width, 64);
        int rank = perm.length;
        // Output element order walks the permuted view; keep its multi-index and the source offset in step.
        long[] viewStride = new long[rank];
        long stride = 1;
        for (int i = rank - 1; i >= 0; i--) {
            viewStride[i] = stride;
            stride *= view.dim(i);
        }
        long[] dims = new long[rank];
        long[] strides = new long[rank];
        for (int i = 0; i < rank; i++) {
            dims[i] = view.dim(perm[i]);
            strides[i] = viewStride[perm[i]];
        }
        long[] index = new long[rank];
        long offset = 0;
        long rest = first;
        for (int i = rank - 1; i >= 0; i--) {
            index[i] = rest % dims[i];
            rest /= dims[i];
            offset += index[i] * strides[i];
        }
        for (long k = 0; k < count; k++) {
            MemorySegment.copy(src, offset * width, out, k * width, width);
            for (int i = rank - 1; i >= 0; i--) {
                if (++index[i] < dims[i]) {
                    offset += strides[i];
                    break;
                }
                offset -= (dims[i] - 1) * strides[i];
                index[i] = 0;
            }
        }
        return out;
    }
}
