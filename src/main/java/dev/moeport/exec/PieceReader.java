package dev.moeport.exec;

import dev.moeport.MoeportException;
import dev.moeport.io.NativeIO;
import dev.moeport.plan.Piece;
import dev.moeport.quant.QuantFormat;
import dev.moeport.quant.QuantKernel;

import dev.moeport.tensor.Tensor;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.List;

/**
 * Reads rows of {@link Piece}s: a source's rows as a zero-copy slice of the mapped input (or what its
 * format assembles), zeros, or a quantized weight's rows decoded by the kernel into scratch memory.
 * Shared by the executor and by {@code verify}.
 */
public final class PieceReader {
    /** Bytes a chunk holds at most (more only when a single row is larger). */
    public static final long CHUNK_BYTES = 8L << 20;
    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);

    private final QuantKernel kernel;

    public PieceReader(QuantKernel kernel) {
        this.kernel = kernel;
    }

    /** Output bytes of one row (entry of the outermost dimension) of {@code p}. */
    public static long rowBytes(Piece p) {
        long rows = p.rows();
        return rows == 0 ? 0 : p.byteSize() / rows;
    }

    /** Rows per chunk for rows of {@code rowBytes}, at least one, a multiple of {@code granularity}. */
    public static long rowsPerChunk(long rowBytes, int granularity) {
        long rows = rowBytes == 0 ? Long.MAX_VALUE / 2 : CHUNK_BYTES / rowBytes;
        return Math.max(granularity, rows / granularity * granularity);
    }

    /**
     * Rows {@code [start, start + count)} of {@code p}. A source's bytes are a view that lives as long as
     * {@code arena} (zero-copy for mapped tensors); decoded rows and zeros live in {@code scratch}'s
     * buffer {@code slot} until its next use.
     */
    public MemorySegment read(Piece p, long start, long count, Arena arena, Scratch scratch, int slot) {
        return switch (p) {
            case Piece.Source s -> {
                Tensor t = s.tensor();
                boolean whole = t.rank() == 0 || (start == 0 && count == t.shape().dim(0));
                yield (whole ? t : t.narrow(start, count, t.name())).bytes(arena);
            }
            case Piece.Zeros z -> scratch.zeros(count * z.rowBytes());
            case Piece.Dequantized d -> decode(d, start, count, arena, scratch, slot);
        };
    }

    private MemorySegment decode(Piece.Dequantized d, long start, long count, Arena arena, Scratch scratch, int slot) {
        QuantFormat format = d.format();
        long cols = d.columns();
        MemorySegment weight = d.weight().narrow(start, count, d.weight().name()).bytes(arena);
        MemorySegment scale = format == QuantFormat.FP8 ? MemorySegment.NULL : d.scale().narrow(start, count, d.scale().name()).bytes(arena);
        Tensor perTensor = format == QuantFormat.FP8 ? d.scale() : d.scale2();
        float tensorScale = perTensor == null ? 1f : scalar(perTensor, arena);
        MemorySegment out = scratch.buffer(slot, count * cols * d.dtype().byteWidth());
        kernel.dequantize(format, weight, scale, tensorScale, count, cols, d.dtype(), out);
        release(weight);
        return out;
    }

    private static float scalar(Tensor t, Arena arena) {
        if (t.numel() != 1) {
            throw new MoeportException(t.where() + ": expected one per-tensor scale, found " + t.describe());
        }
        return t.bytes(arena).get(F32, 0);
    }

    /** Calls {@code action} with consecutive chunks of {@code p}'s rows and each chunk's first row. */
    public void forEachChunk(Piece p, Scratch scratch, int slot, ChunkAction action) {
        long rows = p.rows();
        long step = rowsPerChunk(rowBytes(p), 1);
        for (long r = 0; r < Math.max(rows, 1); r += step) {
            long n = Math.min(step, rows - r);
            try (Arena arena = Arena.ofConfined()) {
                MemorySegment bytes = rows == 0 ? MemorySegment.NULL.reinterpret(0) : read(p, r, n, arena, scratch, slot);
                action.accept(bytes, r, n);
                release(bytes);
            }
        }
    }

    @FunctionalInterface
    public interface ChunkAction {
        void accept(MemorySegment bytes, long firstRow, long rows);
    }

    /** Drops the pages of a chunk read from a mapped file: bounds the resident set on huge inputs. */
    public static void release(MemorySegment bytes) {
        if (bytes.isMapped()) {
            NativeIO.advise(bytes, NativeIO.Advice.DONTNEED);
        }
    }

    /**
     * Rows of a matrix assembled from pieces of whole rows: a range is one slice when a single piece
     * holds it, else the parts gathered into scratch memory.
     */
    public final class Rows {
        private final List<Piece> pieces;
        private final long[] firstRows;
        private final long rowBytes;

        public Rows(List<Piece> pieces) {
            this.pieces = pieces;
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

        /** Rows {@code [start, start + count)}, valid until the next read with this scratch. */
        public MemorySegment read(long start, long count, Arena arena, Scratch scratch) {
            List<Piece> parts = new ArrayList<>();
            List<long[]> ranges = new ArrayList<>();
            for (int i = 0; i < pieces.size(); i++) {
                long a = Math.max(start, firstRows[i]);
                long b = Math.min(start + count, firstRows[i + 1]);
                if (a < b) {
                    parts.add(pieces.get(i));
                    ranges.add(new long[] {a - firstRows[i], b - a});
                }
            }
            if (parts.size() == 1) {
                return PieceReader.this.read(parts.getFirst(), ranges.getFirst()[0], ranges.getFirst()[1], arena, scratch, Scratch.DECODED);
            }
            MemorySegment gathered = scratch.buffer(Scratch.GATHER, count * rowBytes);
            long at = 0;
            for (int i = 0; i < parts.size(); i++) {
                MemorySegment bytes = PieceReader.this.read(parts.get(i), ranges.get(i)[0], ranges.get(i)[1], arena, scratch, Scratch.DECODED);
                MemorySegment.copy(bytes, 0, gathered, at, bytes.byteSize());
                release(bytes);
                at += bytes.byteSize();
            }
            return gathered;
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
            case Piece.Dequantized d -> new Piece.Dequantized(d.format(), d.weight().narrow(start, count, d.weight().name()),
                    d.format() == QuantFormat.FP8 ? d.scale() : d.scale().narrow(start, count, d.scale().name()), d.scale2(), d.dtype());
        };
    }

}
