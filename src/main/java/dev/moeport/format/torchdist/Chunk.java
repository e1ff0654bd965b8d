package dev.moeport.format.torchdist;

import dev.moeport.MoeportException;
import dev.moeport.tensor.DType;
import dev.moeport.tensor.Shape;
import java.lang.foreign.MemorySegment;
import java.nio.file.Path;
import java.util.Arrays;

/**
 * One chunk of a saved tensor: the box it covers in the global tensor and the {@code torch.save} zip
 * that holds it, a slice of a mapped {@code .distcp} file. The zip is read on first use, so that
 * opening a checkpoint touches only its metadata.
 */
final class Chunk {
    final long[] offsets;
    final long[] sizes;
    private final MemorySegment zip;
    private final Path file;
    private final long fileOffset;
    private volatile StoredTensor stored;

    Chunk(long[] offsets, long[] sizes, MemorySegment zip, Path file, long fileOffset) {
        this.offsets = offsets;
        this.sizes = sizes;
        this.zip = zip;
        this.file = file;
        this.fileOffset = fileOffset;
    }

    long volume() {
        long v = 1;
        for (long s : sizes) {
            v *= s; // cannot overflow: the box lies inside a tensor whose element count fits a long
        }
        return v;
    }

    /** The stored tensor, checked against what the metadata says of this chunk. */
    StoredTensor stored(DType dtype, String fqn) {
        StoredTensor s = stored;
        if (s == null) {
            // reading twice in a race is harmless: both threads build the same view
            s = TorchSave.read(zip, where(fqn));
            if (s.dtype() != dtype || !Arrays.equals(s.shape(), sizes)) {
                throw new MoeportException(where(fqn) + ": holds " + s.dtype() + Shape.of(s.shape())
                        + " but the metadata says " + dtype + Shape.of(sizes));
            }
            stored = s;
        }
        return s;
    }

    String where(String fqn) {
        return file + " (chunk at " + Arrays.toString(offsets) + " of '" + fqn + "', bytes " + fileOffset + ".."
                + (fileOffset + zip.byteSize()) + ")";
    }
}
