package dev.moeport.format.torchdist;

import dev.moeport.MoeportException;
import dev.moeport.tensor.DType;
import dev.moeport.tensor.Shape;
import dev.moeport.tensor.Tensor;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;

/**
 * A tensor of a torch_dist checkpoint: a box of a {@link SavedTensor}, seen without its first
 * {@code dropped} dimensions (each of extent 1 in the box, as {@link #select} leaves them).
 * {@link #narrow} and {@link #select} only move the box. {@link #bytes} is a zero-copy slice of the
 * mapped file when one chunk holds the box contiguously (an expert of a chunk, a layer of a stack),
 * otherwise the parts of every chunk the box spans, copied into place.
 */
final class ChunkedTensor implements Tensor {
    private static final long SCRATCH_ALIGNMENT = 64;

    private final String name;
    private final SavedTensor saved;
    private final long[] lo;
    private final long[] extent;
    private final int dropped;

    private ChunkedTensor(String name, SavedTensor saved, long[] lo, long[] extent, int dropped) {
        this.name = name;
        this.saved = saved;
        this.lo = lo;
        this.extent = extent;
        this.dropped = dropped;
    }

    /** The whole of {@code saved}, under {@code name}. */
    static ChunkedTensor of(String name, SavedTensor saved) {
        return new ChunkedTensor(name, saved, new long[saved.shape.length], saved.shape.clone(), 0);
    }

    @Override
    public String name() {
        return name;
    }

    @Override
    public DType dtype() {
        return saved.dtype;
    }

    @Override
    public Shape shape() {
        return Shape.of(Arrays.copyOfRange(extent, dropped, extent.length));
    }

    @Override
    public String where() {
        return name.equals(saved.fqn) ? saved.where() : "tensor '" + name + "' (of " + saved.where() + ")";
    }

    /** {@code gather N chunks} when the box spans several chunks, which {@link #bytes} copies into place; else none. */
    @Override
    public String transform() {
        long spanned = saved.chunks.stream().filter(c -> c.volume() > 0 && intersects(c)).count();
        return spanned > 1 ? "gather " + spanned + " chunks" : null;
    }

    @Override
    public ChunkedTensor narrow(long start, long count, String newName) {
        if (dropped == extent.length) {
            throw new MoeportException(where() + ": expected at least 1 dimension(s), got " + describe());
        }
        long outer = extent[dropped];
        if (start < 0 || count < 0 || start > outer || count > outer - start) {
            throw new MoeportException(where() + ": range [" + start + ", " + (start + count) + ") out of dimension 0 of size " + outer);
        }
        long[] newLo = lo.clone();
        long[] newExtent = extent.clone();
        newLo[dropped] += start;
        newExtent[dropped] = count;
        return new ChunkedTensor(newName, saved, newLo, newExtent, dropped);
    }

    @Override
    public ChunkedTensor select(long index, String newName) {
        ChunkedTensor one = narrow(index, 1, newName);
        return new ChunkedTensor(newName, saved, one.lo, one.extent, dropped + 1);
    }

    @Override
    public MemorySegment bytes(Arena scratch) {
        if (numel() == 0) {
            return scratch.allocate(0);
        }
        List<Chunk> spanned = new ArrayList<>();
        List<StoredTensor> stored = new ArrayList<>();
        for (Chunk c : saved.chunks) {
            if (c.volume() > 0 && intersects(c)) {
                spanned.add(c);
                // read before allocating: a chunk whose data exists vouches for the size the metadata claims
                stored.add(c.stored(saved.dtype, saved.fqn));
            }
        }
        if (spanned.size() == 1) { // the chunks tile the tensor, so this one holds the whole box
            MemorySegment slice = stored.getFirst().contiguousSlice(relative(lo, spanned.getFirst()), extent);
            if (slice != null) {
                return slice;
            }
        }
        MemorySegment target = scratch.allocate(byteSize(), SCRATCH_ALIGNMENT);
        long[] targetStrides = new long[extent.length];
        long stride = 1;
        for (int d = extent.length - 1; d >= 0; d--) {
            targetStrides[d] = stride;
            stride *= extent[d];
        }
        for (int i = 0; i < spanned.size(); i++) {
            Chunk c = spanned.get(i);
            long[] from = new long[extent.length];
            long[] size = new long[extent.length];
            long targetOffset = 0;
            for (int d = 0; d < extent.length; d++) {
                from[d] = Math.max(lo[d], c.offsets[d]);
                size[d] = Math.min(lo[d] + extent[d], c.offsets[d] + c.sizes[d]) - from[d];
                targetOffset += (from[d] - lo[d]) * targetStrides[d];
            }
            stored.get(i).copyBox(relative(from, c), size, target, targetOffset, targetStrides);
        }
        return target;
    }

    private boolean intersects(Chunk c) {
        for (int d = 0; d < extent.length; d++) {
            if (c.offsets[d] >= lo[d] + extent[d] || lo[d] >= c.offsets[d] + c.sizes[d]) {
                return false;
            }
        }
        return true;
    }

    private static long[] relative(long[] global, Chunk c) {
        long[] r = new long[global.length];
        for (int d = 0; d < r.length; d++) {
            r[d] = global[d] - c.offsets[d];
        }
        return r;
    }
}
