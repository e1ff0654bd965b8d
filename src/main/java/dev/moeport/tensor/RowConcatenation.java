package dev.moeport.tensor;

import dev.moeport.MoeportException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;

/**
 * Tensors of one dtype and one inner shape seen as one tensor, their rows one after the other: the row sections
 * under which Megatron-Core's torch_dist saves a Mamba or Gated DeltaNet {@code in_proj}, read back as the tensor the
 * rule tables map. A row range within one part is that part's (free); {@link #bytes} copies only across parts.
 */
public record RowConcatenation(String name, List<Tensor> parts) implements Tensor {

    public RowConcatenation {
        parts = List.copyOf(parts);
        Tensor first = parts.getFirst();
        for (Tensor p : parts) {
            if (p.rank() < 1 || p.dtype() != first.dtype() || !p.shape().dropFirst().equals(first.shape().dropFirst())) {
                throw new MoeportException(p.where() + " is " + p.describe() + " but " + first.where() + " is " + first.describe()
                        + "; as sections of tensor '" + name + "' they must differ in rows only");
            }
        }
    }

    @Override
    public DType dtype() {
        return parts.getFirst().dtype();
    }

    @Override
    public Shape shape() {
        return parts.getFirst().shape().with(0, parts.stream().mapToLong(p -> p.shape().dim(0)).sum());
    }

    @Override
    public String where() {
        return "tensor '" + name + "' (" + parts.size() + " sections, the first " + parts.getFirst().where() + ")";
    }

    @Override
    public Tensor narrow(long start, long count, String newName) {
        long rows = shape().dim(0);
        if (start < 0 || count < 0 || start > rows || count > rows - start) {
            throw new MoeportException(where() + ": range [" + start + ", " + (start + count) + ") out of dimension 0 of size " + rows);
        }
        if (count == 0) {
            return parts.getFirst().narrow(0, 0, newName);
        }
        List<Tensor> spanned = rowRange(parts, start, count, (part, from, n) -> newName);
        return spanned.size() == 1 ? spanned.getFirst() : new RowConcatenation(newName, spanned);
    }

    /** The name of rows {@code [start, start + count)} of a part. */
    @FunctionalInterface
    public interface RangeName {
        String of(Tensor part, long start, long count);
    }

    /** Rows {@code [start, start + count)} of the rows {@code parts} hold one after the other: row ranges of the parts, in order. */
    public static List<Tensor> rowRange(List<Tensor> parts, long start, long count, RangeName name) {
        List<Tensor> spanned = new ArrayList<>();
        long at = 0;
        for (Tensor p : parts) {
            long n = p.shape().dim(0);
            long from = Math.max(start, at);
            long to = Math.min(start + count, at + n);
            if (from < to) {
                spanned.add(p.narrow(from - at, to - from, name.of(p, from - at, to - from)));
            }
            at += n;
        }
        return spanned;
    }

    @Override
    public Tensor select(long index, String newName) {
        long at = 0;
        for (Tensor p : parts) {
            long n = p.shape().dim(0);
            if (index >= at && index < at + n) {
                return p.select(index - at, newName);
            }
            at += n;
        }
        throw new MoeportException(where() + ": index " + index + " out of dimension 0 of size " + at);
    }

    @Override
    public MemorySegment bytes(Arena scratch) {
        MemorySegment joined = scratch.allocate(byteSize(), 64);
        long offset = 0;
        for (Tensor p : parts) {
            MemorySegment b = p.bytes(scratch);
            MemorySegment.copy(b, 0, joined, offset, b.byteSize());
            offset += b.byteSize();
        }
        return joined;
    }

    @Override
    public long storedBytes() {
        return parts.stream().mapToLong(Tensor::storedBytes).sum();
    }

    @Override
    public String transform() {
        return "join " + parts.size() + " sections";
    }

    @Override
    public boolean decodes() {
        return parts.stream().anyMatch(Tensor::decodes);
    }
}
