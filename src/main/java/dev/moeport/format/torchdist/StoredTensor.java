package dev.moeport.format.torchdist;

import dev.moeport.tensor.DType;
import java.lang.foreign.MemorySegment;

/**
 * A tensor as {@code torch.save} stored it: a view (shape, strides and offset, in elements) of a
 * storage, which is a zero-copy slice of the mapped file. The view may be non-contiguous (a transposed
 * tensor is saved as is) and may use only part of its storage.
 */
record StoredTensor(DType dtype, long[] shape, long[] strides, long storageOffset, MemorySegment storage) {

    /**
     * The bytes of the box {@code [lo, lo + extent)} of this tensor when they lie contiguously, in
     * row-major order, in the storage: a zero-copy slice; null otherwise.
     */
    MemorySegment contiguousSlice(long[] lo, long[] extent) {
        long numel = 1;
        long expectedStride = 1;
        long first = storageOffset;
        for (int d = shape.length - 1; d >= 0; d--) {
            numel *= extent[d];
            first += lo[d] * strides[d];
        }
        if (numel == 0) {
            return storage.asSlice(0, 0);
        }
        for (int d = shape.length - 1; d >= 0; d--) {
            if (extent[d] == 1) {
                continue; // a dimension of one entry has no stride to honour
            }
            if (strides[d] != expectedStride) {
                return null;
            }
            expectedStride *= extent[d];
        }
        long width = dtype.byteWidth();
        return storage.asSlice(first * width, numel * width);
    }

    /**
     * Copies the box {@code [lo, lo + extent)} of this tensor into {@code target}, a contiguous row-major
     * tensor whose element strides are {@code targetStrides}, starting at element {@code targetOffset}.
     * Runs that are contiguous on both sides move as blocks; a transposed layout moves element by element.
     */
    void copyBox(long[] lo, long[] extent, MemorySegment target, long targetOffset, long[] targetStrides) {
        int rank = shape.length;
        long width = dtype.byteWidth();
        long source = storageOffset;
        for (int d = 0; d < rank; d++) {
            if (extent[d] == 0) {
                return;
            }
            source += lo[d] * strides[d];
        }
        // Merge trailing dimensions that are contiguous on both sides into one run of elements.
        long run = 1;
        int outer = rank;
        while (outer > 0) {
            int d = outer - 1;
            boolean contiguous = extent[d] == 1 || (strides[d] == run && targetStrides[d] == run);
            if (!contiguous) {
                break;
            }
            run *= extent[d];
            outer = d;
        }
        long[] index = new long[outer];
        while (true) {
            long from = source;
            long to = targetOffset;
            for (int d = 0; d < outer; d++) {
                from += index[d] * strides[d];
                to += index[d] * targetStrides[d];
            }
            MemorySegment.copy(storage, from * width, target, to * width, run * width);
            int d = outer - 1;
            while (d >= 0 && ++index[d] == extent[d]) {
                index[d] = 0;
                d--;
            }
            if (d < 0) {
                return;
            }
        }
    }
}
