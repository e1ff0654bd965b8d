package dev.moeport.format.torchdist;

import dev.moeport.MoeportException;
import dev.moeport.tensor.DType;
import dev.moeport.tensor.Shape;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Comparator;
import java.util.HashSet;
import java.util.List;
import java.util.Set;

/**
 * A global tensor of the checkpoint under its key as saved, and the chunks that hold it. The chunks
 * are checked once, when the checkpoint opens: each lies inside the tensor, no two overlap, and
 * together they cover it.
 */
final class SavedTensor {
    final String fqn;
    final DType dtype;
    final long[] shape;
    final List<Chunk> chunks;
    private final Path folder;

    SavedTensor(String fqn, DType dtype, long[] shape, List<Chunk> chunks, Path folder) {
        this.fqn = fqn;
        this.dtype = dtype;
        this.shape = shape;
        this.chunks = List.copyOf(chunks);
        this.folder = folder;
        validate();
    }

    String where() {
        return "tensor '" + fqn + "' in " + folder;
    }

    private void validate() {
        long numel = Shape.of(shape).numel();
        if (numel < 0 || dtype.byteSize(numel) < 0) {
            throw new MoeportException(where() + ": shape " + Shape.of(shape) + " is too large");
        }
        for (Chunk c : chunks) {
            if (c.offsets.length != shape.length || c.sizes.length != shape.length) {
                throw new MoeportException(where() + ": chunk at " + Arrays.toString(c.offsets) + " has "
                        + c.sizes.length + " dimensions, the tensor " + shape.length);
            }
            for (int d = 0; d < shape.length; d++) {
                if (c.offsets[d] > shape[d] || c.sizes[d] > shape[d] - c.offsets[d]) {
                    throw new MoeportException(where() + ": chunk at " + Arrays.toString(c.offsets) + " of size "
                            + Shape.of(c.sizes) + " reaches beyond the tensor's " + Shape.of(shape));
                }
            }
        }
        requireDisjoint();
        long covered = chunks.stream().mapToLong(Chunk::volume).sum(); // disjoint boxes inside the tensor: no overflow
        if (covered != numel) {
            throw new MoeportException(where() + ": its chunks cover " + covered + " of its " + numel
                    + " elements (chunks missing)");
        }
    }

    /**
     * No two chunks share an element. A sweep along the dimension with the most distinct chunk
     * offsets compares each chunk only with those that overlap it in that dimension.
     */
    private void requireDisjoint() {
        List<Chunk> boxes = chunks.stream().filter(c -> c.volume() > 0).toList();
        if (shape.length == 0) {
            if (boxes.size() > 1) {
                throw new MoeportException(where() + ": " + boxes.size() + " chunks of a 0-d tensor overlap");
            }
            return;
        }
        int sweep = 0;
        long best = -1;
        for (int d = 0; d < shape.length; d++) {
            Set<Long> distinct = new HashSet<>();
            for (Chunk c : boxes) {
                distinct.add(c.offsets[d]);
            }
            if (distinct.size() > best) {
                best = distinct.size();
                sweep = d;
            }
        }
        int dim = sweep;
        List<Chunk> sorted = new ArrayList<>(boxes);
        sorted.sort(Comparator.comparingLong(c -> c.offsets[dim]));
        List<Chunk> active = new ArrayList<>();
        for (Chunk c : sorted) {
            active.removeIf(a -> a.offsets[dim] + a.sizes[dim] <= c.offsets[dim]);
            for (Chunk a : active) {
                if (overlap(a, c)) {
                    throw new MoeportException(where() + ": chunks at " + Arrays.toString(a.offsets) + " and "
                            + Arrays.toString(c.offsets) + " overlap");
                }
            }
            active.add(c);
        }
    }

    private static boolean overlap(Chunk a, Chunk b) {
        for (int d = 0; d < a.offsets.length; d++) {
            if (a.offsets[d] + a.sizes[d] <= b.offsets[d] || b.offsets[d] + b.sizes[d] <= a.offsets[d]) {
                return false;
            }
        }
        return true;
    }
}
