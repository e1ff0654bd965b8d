package dev.moeport.exec;

import dev.moeport.MoeportException;
import dev.moeport.io.DropBehind;
import dev.moeport.io.MappedMemory;
import dev.moeport.io.NativeIO;
import dev.moeport.plan.Piece;
import dev.moeport.tensor.Tensor;
import dev.moeport.tensor.TensorView;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;

/**
 * Reads rows of {@link Piece}s: a source's rows as a zero-copy slice of the mapped input (or what its
 * tensor assembles or decodes into the chunk's arena), or zeros. Shared by the executor and by
 * {@code verify}.
 */
public final class PieceReader {
    private PieceReader() {}

    /** Bytes a chunk holds at most (more only when a single row is larger). */
    public static final long CHUNK_BYTES = 8L << 20;


    /** Output bytes of one row (entry of the outermost dimension) of {@code p}. */
    public static long rowBytes(Piece p) {
        long rows = p.rows();
        return rows == 0 ? 0 : p.byteSize() / rows;
    }

    /**
     * Rows per chunk for rows of {@code rowBytes}, at least one, a multiple of {@code granularity}; even
     * when above one, so that formats packing two rows a byte (int4_g128) decode whole bytes.
     */
    public static long rowsPerChunk(long rowBytes, int granularity) {
        return rowsPer(CHUNK_BYTES, rowBytes, granularity);
    }

    /** Rows in {@code bytes}, as {@link #rowsPerChunk} counts them. */
    static long rowsPer(long bytes, long rowBytes, int granularity) {
        long rows = rowBytes == 0 ? Long.MAX_VALUE / 2 : bytes / rowBytes;
        long step = Math.max(granularity, rows / granularity * granularity);
        return step > 1 && step % 2 != 0 && granularity == 1 ? step - 1 : step;
    }

    /**
     * Rows {@code [start, start + count)} of {@code p}: a source's bytes live as long as {@code arena}
     * (zero-copy for mapped tensors); zeros live in {@code scratch}.
     */
    public static MemorySegment read(Piece p, long start, long count, Arena arena, Scratch scratch) {
        return read(p, start, count, arena, scratch, false, false);
    }

    /**
     * Like {@link #read(Piece, long, long, Arena, Scratch)}, but with {@code staged}, the bytes of a
     * mapped tensor are copied into {@code scratch} and their pages dropped (from the page cache too with {@code drop}).
     * If the file shrinks under the mapping, reading it faults: a copy reports the fault ({@link MappedMemory}), but a
     * fault inside compiled Vector API code crashes the JVM (SIGBUS). So kernels read only copies, which stay in cache for
     * them; plain copies to the output hand the mapping to the writer, which copies it in pieces ({@link
     * dev.moeport.format.PartialFile#write}).
     */
    static MemorySegment read(Piece p, long start, long count, Arena arena, Scratch scratch, boolean staged, boolean drop) {
        return switch (p) {
            case Piece.Source s -> {
                Tensor t = s.tensor();
                boolean whole = t.rank() == 0 || (start == 0 && count == t.shape().dim(0));
                Tensor rows = whole ? t : t.narrow(start, count, t.name());
                MemorySegment bytes = rows.bytes(arena);
                if (!staged || !bytes.isMapped()) {
                    yield bytes;
                }
                MemorySegment copy = staged(s, bytes, scratch.buffer(Scratch.INPUT, bytes.byteSize()));
                release(bytes, drop);
                yield copy;
            }
            case Piece.Zeros z -> scratch.zeros(count * z.rowBytes());
        };
    }

    /**
     * {@code bytes} of {@code source}, copied into {@code into} (as large) when they are mapped, for a kernel to read:
     * a copy out of a mapping whose file shrank fails with an error, where a kernel's read crashes the JVM.
     */
    static MemorySegment staged(Piece.Source source, MemorySegment bytes, MemorySegment into) {
        if (!bytes.isMapped()) {
            return bytes;
        }
        if (!MappedMemory.copy(bytes, 0, into, 0, bytes.byteSize())) {
            throw inputChanged(source, null);
        }
        return into;
    }

    /** The error of a mapped source whose file could not be read (it shrank or changed under the mapping). */
    static MoeportException inputChanged(Piece.Source source, Throwable cause) {
        return new MoeportException(source.tensor().where() + ": could not be read: the file shrank or changed while moeport read it", cause);
    }

    /**
     * Calls {@code action} with consecutive chunks of {@code p}'s rows and each chunk's first row;
     * {@code staged}: for a kernel (see {@link #read(Piece, long, long, Arena, Scratch, boolean, boolean)}); {@code drop}:
     * the run reads these rows for the last time, and drops them from the page cache ({@link DropBehind}).
     */
    public static void forEachChunk(Piece p, Scratch scratch, boolean staged, boolean drop, ChunkAction action) {
        long rows = p.rows();
        long step = rowsPerChunk(rowBytes(p), 1);
        for (long r = 0; r < Math.max(rows, 1); r += step) {
            WorkerPool.checkCancelled();
            long n = Math.min(step, rows - r);
            prefetch(p, r + step, Math.min(step, rows - r - step));
            try (Arena arena = Arena.ofConfined()) {
                MemorySegment bytes = rows == 0 ? MemorySegment.NULL.reinterpret(0) : read(p, r, n, arena, scratch, staged, drop);
                action.accept(bytes, r, n);
                release(bytes, drop);
            }
        }
    }

    @FunctionalInterface
    public interface ChunkAction {
        void accept(MemorySegment bytes, long firstRow, long rows);
    }

    /** Asks the kernel to start reading the next chunk of a mapped tensor while this one is being worked on. */
    private static void prefetch(Piece p, long start, long count) {
        if (count > 0 && p instanceof Piece.Source s && s.tensor() instanceof TensorView view) {
            NativeIO.advise(view.narrow(start, count, view.name()).data(), NativeIO.Advice.WILLNEED);
        }
    }

    /**
     * Drops the pages of a chunk read from a mapped file from this process (bounds the resident set on huge inputs), and
     * with {@code drop} from the page cache.
     */
    static void release(MemorySegment bytes, boolean drop) {
        if (bytes.isMapped() && bytes.scope().isAlive()) {
            NativeIO.advise(bytes, NativeIO.Advice.DONTNEED);
            if (drop) {
                DropBehind.drop(bytes);
            }
        }
    }

    /**
     * Rows of a matrix assembled from pieces of whole rows: a range is one slice when a single piece
     * holds it, else the parts gathered into scratch memory.
     */
    public static final class Rows {
        private final List<Piece> pieces;
        private final long[] firstRows;
        private final long rowBytes;
        private final boolean drop;

        /** The rows of {@code pieces}; {@code drop}: read for the last time, and dropped from the page cache. */
        public Rows(List<Piece> pieces, boolean drop) {
            this.pieces = pieces;
            this.drop = drop;
            this.rowBytes = pieces.isEmpty() ? 0 : PieceReader.rowBytes(pieces.getFirst());
            this.firstRows = new long[pieces.size() + 1];
            for (int i = 0; i < pieces.size(); i++) {
                if (PieceReader.rowBytes(pieces.get(i)) != rowBytes && pieces.get(i).rows() > 0) {
                    throw new IllegalArgumentException("pieces of different row sizes: " + pieces.get(i).describe());
                }
                firstRows[i + 1] = firstRows[i] + pieces.get(i).rows();
            }
        }

        public long count() {
            return firstRows[pieces.size()];
        }

        public long rowBytes() {
            return rowBytes;
        }

        /** Rows {@code [start, start + count)}, staged for kernels, valid until the next read with this scratch. */
        public MemorySegment read(long start, long count, Arena arena, Scratch scratch) {
            if (start < 0 || count < 0 || start + count > count()) {
                throw new IllegalArgumentException("rows [" + start + ", " + (start + count) + ") out of " + count());
            }
            List<Piece> parts = slice(start, count);
            if (parts.size() == 1) {
                return PieceReader.read(parts.getFirst(), 0, parts.getFirst().rows(), arena, scratch, true, drop);
            }
            MemorySegment gathered = scratch.buffer(Scratch.GATHER, count * rowBytes);
            long at = 0;
            for (Piece part : parts) {
                MemorySegment bytes = PieceReader.read(part, 0, part.rows(), arena, scratch, true, drop);
                MemorySegment.copy(bytes, 0, gathered, at, bytes.byteSize());
                at += bytes.byteSize();
            }
            return gathered;
        }

        /**
         * Rows {@code [start, start + count)} for a kernel, {@code groupRows} at a time, each group staged as {@link
         * #read} stages rows, with its first row counted from {@code start}. Rows of one mapped piece are copied out a
         * group at a time, so that the kernel reads them from the cache, and their pages released once, after the last.
         */
        public void forEachGroup(long start, long count, long groupRows, Arena arena, Scratch scratch, ChunkAction action) {
            List<Piece> parts = slice(start, count);
            if (parts.size() == 1 && parts.getFirst() instanceof Piece.Source source) {
                MemorySegment bytes = PieceReader.read(source, 0, source.rows(), arena, scratch, false, false);
                for (long k = 0; k < count; k += groupRows) {
                    long m = Math.min(groupRows, count - k);
                    action.accept(staged(source, bytes.asSlice(k * rowBytes, m * rowBytes), scratch.buffer(Scratch.INPUT, m * rowBytes)), k, m);
                }
                release(bytes, drop);
                return;
            }
            for (long k = 0; k < count; k += groupRows) {
                long m = Math.min(groupRows, count - k);
                action.accept(read(start + k, m, arena, scratch), k, m);
            }
        }

        /** The pieces (narrowed) holding rows {@code [start, start + count)}. */
        public List<Piece> slice(long start, long count) {
            List<Piece> out = new ArrayList<>();
            for (int i = 0; i < pieces.size(); i++) {
                long a = Math.max(start, firstRows[i]);
                long b = Math.min(start + count, firstRows[i + 1]);
                if (a < b) {
                    out.add(narrow(pieces.get(i), a - firstRows[i], b - a));
                }
            }
            return out;
        }
    }

    /** Rows {@code [start, start + count)} of a piece, as a piece. */
    static Piece narrow(Piece p, long start, long count) {
        if (start == 0 && count == p.rows()) {
            return p;
        }
        return switch (p) {
            case Piece.Source s -> new Piece.Source(s.tensor().narrow(start, count, s.tensor().name()));
            case Piece.Zeros z -> new Piece.Zeros(count, z.rowBytes());
        };
    }

}
