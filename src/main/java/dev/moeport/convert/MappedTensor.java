package dev.moeport.convert;

import dev.moeport.plan.Piece;
import dev.moeport.tensor.DType;
import dev.moeport.tensor.Shape;
import java.util.List;

/**
 * An output tensor under its final name, before the choice of copy, cast or quantization.
 *
 * @param sources the input tensors it comes from: the keys of calibration data (the largest applies)
 * @param amaxGroup tensors that must share one per-tensor scale (q/k/v of one attention, gate/up of one
 *     MLP) name the same group and carry the same {@code amaxPieces}; null when it scales on its own
 * @param amaxPieces what the shared amax is computed over (the whole fused tensor, or all siblings)
 * @param keepDtype never cast by {@code --dtype}
 */
public record MappedTensor(String name, DType dtype, Shape shape, List<Piece> pieces, List<String> sources, String amaxGroup,
                           List<Piece> amaxPieces, boolean keepDtype) {

    /** A tensor taken as it is: its own calibration, its own scale. */
    public static MappedTensor identity(String name, dev.moeport.tensor.Tensor t) {
        return new MappedTensor(name, t.dtype(), t.shape(), List.of(new Piece.Source(t)), List.of(t.name()), null, null, false);
    }

    public int rank() {
        return shape.rank();
    }
}
