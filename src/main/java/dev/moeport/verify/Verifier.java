package dev.moeport.verify;

import dev.moeport.convert.MappedTensor;
import dev.moeport.exec.PieceReader;
import dev.moeport.exec.Progress;
import dev.moeport.exec.Scratch;
import dev.moeport.exec.WorkerPool;
import dev.moeport.plan.Piece;
import dev.moeport.tensor.DType;
import dev.moeport.tensor.FloatFormats;
import dev.moeport.tensor.ReshapedTensor;
import dev.moeport.tensor.Shape;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.List;

/**
 * Compares two {@link CheckpointView}s tensor by tensor, streaming both in chunks of rows on worker
 * threads: whether each common tensor is bit-identical, and if not its error figures, with A as the
 * reference. Bounded memory whatever the checkpoints' size.
 */
public final class Verifier {

    /**
     * One common tensor's figures. {@code snrDb} is +Infinity for equal values. {@code identical}: same dtype and
     * same bytes; {@code equalValues}: every value equal (NaN to NaN), whatever the dtypes.
     */
    public record TensorResult(String name, DType dtypeA, DType dtypeB, Shape shape, boolean identical, boolean equalValues,
                               double maxAbsError, double meanAbsError, double snrDb, long elements) {
        /** Values exactly equal, held in different dtypes (bf16 against f32, say). */
        public boolean dtypeOnly() {
            return dtypeA != dtypeB && equalValues;
        }
    }

    /** A tensor present on both sides whose shapes differ. */
    public record ShapeMismatch(String name, String shapeA, String shapeB) {}

    public record Report(List<String> missingInB, List<String> extraInB, List<ShapeMismatch> shapeMismatches, List<TensorResult> results) {}

    private Verifier() {}

    public static Report compare(CheckpointView a, CheckpointView b, int threads, Progress progress) {
        List<String> missing = a.tensors().keySet().stream().filter(n -> !b.tensors().containsKey(n)).toList();
        List<String> extra = b.tensors().keySet().stream().filter(n -> !a.tensors().containsKey(n)).toList();
        List<ShapeMismatch> shapes = new ArrayList<>();
        List<MappedTensor[]> pairs = new ArrayList<>();
        for (var e : a.tensors().entrySet()) {
            MappedTensor other = b.tensors().get(e.getKey());
            if (other == null) {
                continue;
            }
            if (!e.getValue().shape().equals(other.shape())) {
                shapes.add(new ShapeMismatch(e.getKey(), e.getValue().shape().toString(), other.shape().toString()));
            } else {
                pairs.add(new MappedTensor[] {e.getValue(), other});
            }
        }
        List<WorkerPool.Task<TensorResult>> tasks = new ArrayList<>();
        for (MappedTensor[] pair : pairs) {
            tasks.add(scratch -> {
                TensorResult r = compare(pair[0], pair[1], scratch, progress);
                progress.addTensors(1);
                return r;
            });
        }
        return new Report(missing, extra, shapes, WorkerPool.run(threads, "moeport-verify", tasks));
    }

    /** Bytes both sides of the comparable tensors hold: the work a comparison reads. */
    public static long comparedBytes(CheckpointView a, CheckpointView b) {
        long total = 0;
        for (var e : a.tensors().entrySet()) {
            MappedTensor other = b.tensors().get(e.getKey());
            if (other != null && other.shape().equals(e.getValue().shape())) {
                total += e.getValue().dtype().byteSize(e.getValue().shape().numel()) + other.dtype().byteSize(other.shape().numel());
            }
        }
        return total;
    }

    /**
     * Pieces cut to rows of the tensor's last dimension (single elements for a 1-d tensor), so that two
     * sides assembled differently (one stack of experts against one tensor per expert) read in step.
     */
    private static List<Piece> rowsOfLastDimension(List<Piece> pieces, int rank) {
        if (rank < 2) {
            return pieces;
        }
        return Piece.matrices(pieces).stream()
                .map(p -> p instanceof Piece.Source s && s.tensor().rank() == 1 ? new Piece.Source(ReshapedTensor.asOneRow(s.tensor())) : p)
                .toList();
    }

    private static TensorResult compare(MappedTensor a, MappedTensor b, Scratch scratch, Progress progress) {
        PieceReader.Rows rowsA = new PieceReader.Rows(rowsOfLastDimension(a.pieces(), a.rank()), false);
        PieceReader.Rows rowsB = new PieceReader.Rows(rowsOfLastDimension(b.pieces(), b.rank()), false);
        boolean floats = isFloat(a.dtype()) && isFloat(b.dtype());
        boolean sameBytes = a.dtype() == b.dtype();
        long rows = rowsA.count();
        long step = PieceReader.rowsPerChunk(Math.max(rowsA.rowBytes(), rowsB.rowBytes()), 1);
        long elementsPerRow = rows == 0 ? 0 : a.shape().numel() / Math.max(rows, 1);
        double maxAbs = 0;
        double sumAbs = 0;
        double signal = 0;
        double noise = 0;
        for (long r = 0; r < rows; r += step) {
            long n = Math.min(step, rows - r);
            try (Arena arena = Arena.ofConfined()) {
                MemorySegment x = rowsA.read(r, n, arena, scratch);
                MemorySegment y = rowsB.read(r, n, arena, scratch.second());
                if (sameBytes && x.mismatch(y) != -1) {
                    sameBytes = false;
                }
                if (floats) {
                    long count = n * elementsPerRow;
                    for (long i = 0; i < count; i++) {
                        double va = FloatFormats.read(x, a.dtype(), i);
                        double vb = FloatFormats.read(y, b.dtype(), i);
                        // Equal values (infinities and NaNs included) are no error; an infinity or NaN on one side only is.
                        boolean equal = va == vb || (Double.isNaN(va) && Double.isNaN(vb));
                        double err = equal ? 0 : Double.isFinite(va - vb) ? Math.abs(va - vb) : Double.POSITIVE_INFINITY;
                        maxAbs = Math.max(maxAbs, err);
                        sumAbs += err;
                        if (Double.isFinite(va)) {
                            signal += va * va;
                        }
                        noise += err * err;
                    }
                }
            }
            progress.addBytes(n * (rowsA.rowBytes() + rowsB.rowBytes()));
        }
        long elements = a.shape().numel();
        boolean identical = sameBytes || (rows == 0 && a.dtype() == b.dtype());
        double snr = noise == 0 ? Double.POSITIVE_INFINITY : 10 * Math.log10(signal / noise);
        return new TensorResult(a.name(), a.dtype(), b.dtype(), a.shape(), identical, identical || (floats && maxAbs == 0),
                floats ? maxAbs : (sameBytes ? 0 : Double.NaN), floats && elements > 0 ? sumAbs / elements : (sameBytes ? 0 : Double.NaN),
                floats ? snr : (sameBytes ? Double.POSITIVE_INFINITY : Double.NaN), elements);
    }

    private static boolean isFloat(DType t) {
        return t == DType.BF16 || t == DType.F16 || t == DType.F32;
    }
}
