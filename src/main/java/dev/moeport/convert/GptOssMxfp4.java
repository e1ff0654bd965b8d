package dev.moeport.convert;

import dev.moeport.MoeportException;
import dev.moeport.plan.Piece;
import dev.moeport.quant.DequantizedTensor;
import dev.moeport.quant.QuantFormat;
import dev.moeport.quant.QuantKernel;
import dev.moeport.tensor.DType;
import dev.moeport.tensor.PermutedTensor;
import dev.moeport.tensor.ReshapedTensor;
import dev.moeport.tensor.Shape;
import dev.moeport.tensor.Tensor;
import java.util.ArrayList;
import java.util.List;

/**
 * GPT-OSS's published MXFP4 experts, the only MXFP4 layout transformers loads (its {@code mxfp4} method,
 * integrations/mxfp4.py, reads nothing else): beside a fused expert tensor {@code <name> [E, in, out]} (BF16, as
 * GptOssExperts holds it), {@code <name>_blocks [E, out, in/32, 16]} (E2M1 pairs, low nibble first) and
 * {@code <name>_scales [E, out, in/32]} (E8M0 exponents), each expert stored as {@code [out, in]}: the bytes of Model
 * Optimizer's MXFP4 weight and scale of that expert's matrix, in another shape. Read (dequantize, import, check) and
 * written ({@code --flavor transformers}) from here.
 */
public final class GptOssMxfp4 {
    static final String BLOCKS = "_blocks";
    static final String SCALES = "_scales";

    private GptOssMxfp4() {}

    /** The fused tensor a {@code <name>_blocks} tensor stands for. */
    static String fusedName(String blocksName) {
        return blocksName.substring(0, blocksName.length() - BLOCKS.length());
    }

    /**
     * The quantization of a fused expert tensor {@code [E, in, out]} (its pieces, in any layout): each expert's matrix
     * transposed to {@code [out, in]} and quantized by rows, as Model Optimizer quantizes a linear weight.
     */
    static dev.moeport.plan.Job.Quantize quantize(MappedTensor fused, DType exportType) {
        Shape s = fused.shape();
        Shape rows = Shape.of(s.dim(0), s.dim(2), s.dim(1));
        if (rows.dim(2) % QuantFormat.MXFP4.blockSize() != 0) {
            // Padding would change the shape transformers checks against the config.
            throw new MoeportException("tensor '" + fused.name() + "' has experts of " + rows.dim(2) + " inputs, not a multiple of mxfp4's block of "
                    + QuantFormat.MXFP4.blockSize() + " (keep it unquantized with --exclude)");
        }
        List<Piece> transposed = new ArrayList<>();
        for (Piece p : Piece.matrices(fused.pieces())) {
            if (!(p instanceof Piece.Source src) || src.tensor().rank() != 2 || src.tensor().shape().dim(0) != s.dim(1)) {
                throw new MoeportException("tensor '" + fused.name() + "': its experts are not whole matrices of " + s.dim(1) + " rows; cannot write GPT-OSS's MXFP4 layout");
            }
            Tensor m = src.tensor();
            transposed.add(new Piece.Source(PermutedTensor.reversedAxes(m, m.shape(), Shape.of(m.shape().dim(1), m.shape().dim(0)), m.name() + "^T")));
        }
        QuantFormat f = QuantFormat.MXFP4;
        return new dev.moeport.plan.Job.Quantize(f, rows, fused.dtype(), exportType, transposed,
                new dev.moeport.plan.AmaxSource.None(), null,
                new dev.moeport.plan.OutputTensor(fused.name() + BLOCKS, f.weightType(), blocksShape(rows)),
                new dev.moeport.plan.OutputTensor(fused.name() + SCALES, f.scaleType(), f.scaleShape(rows)), null, null, false);
    }

    /** {@code [E, out, in]} -> {@code [E, out, in/32, 16]}: MXFP4's packed rows cut into their blocks of 32 values. */
    private static Shape blocksShape(Shape rows) {
        int block = QuantFormat.MXFP4.blockSize();
        return Shape.of(rows.dim(0), rows.dim(1), rows.dim(2) / block, BLOCK_BYTES);
    }

    /** Bytes of one block of 32 E2M1 values. */
    private static final int BLOCK_BYTES = QuantFormat.MXFP4.blockSize() * QuantFormat.MXFP4.elementBits() / 8;

    /** The fused tensor {@code [E, in, out]} a {@code _blocks} / {@code _scales} pair stands for, decoded. */
    static Tensor decode(Tensor blocks, Tensor scales, DType dtype, QuantKernel kernel) {
        var b = blocks.shape();
        if (blocks.dtype() != DType.U8 || scales.dtype() != DType.U8 || b.rank() != 4 || b.dim(3) != BLOCK_BYTES
                || !scales.shape().equals(b.dropLast())) {
            throw new MoeportException(blocks.where() + ": " + blocks.describe() + " with scales " + scales.describe()
                    + " is not GPT-OSS's MXFP4 layout ([E, rows, cols/32, 16] U8 and [E, rows, cols/32] U8)");
        }
        Tensor packed = new ReshapedTensor(blocks, Shape.of(b.dim(0), b.dim(1), b.dim(2) * b.dim(3)));
        Tensor decoded = new DequantizedTensor(kernel, QuantFormat.MXFP4, packed, scales, null, dtype);
        return PermutedTensor.transposedMatrices(decoded, fusedName(blocks.name()));
    }
}
