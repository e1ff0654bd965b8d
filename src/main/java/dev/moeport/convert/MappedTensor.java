package dev.moeport.convert;

import dev.moeport.plan.Piece;
import dev.moeport.tensor.DType;
import dev.moeport.tensor.Shape;
import dev.moeport.tensor.Tensor;
import java.util.List;

/**
 * An output tensor under its final name, before the choice of copy, cast or quantization.
 *
 * @param source the input tensor it comes from (the key for calibration data)
 * @param fusedSource the whole input tensor when this one is a part of it (q of a fused QKV, gate of a
 *     gated fc1): parts of one fused tensor share its amax; null otherwise
 * @param keepDtype never cast by {@code --dtype}
 */
public record MappedTensor(String name, DType dtype, Shape shape, List<Piece> pieces, String source, Tensor fusedSource,
                           boolean keepDtype) {
    public int rank() {
        return shape.rank();
    }
}
