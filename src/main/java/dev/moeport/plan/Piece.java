package dev.moeport.plan;

import dev.moeport.tensor.Tensor;
import java.util.ArrayList;
import java.util.List;

/** A run of bytes an output tensor is assembled from: a source tensor's region, or zeros (padding). */
public sealed interface Piece {
    /** Bytes this piece contributes to the output. */
    long byteSize();

    /** Bytes read from the input to make it (progress counts these). */
    default long inputBytes() {
        return byteSize();
    }

    /** What this piece reads, for dry runs: {@code decoder.layers.1.self_attention.linear_qkv.weight[0:128]}. */
    String describe();

    /** Rows (entries of the outermost dimension) this piece contributes. */
    long rows();

    /**
     * Pieces as matrices: a source of rank 3 or more becomes its 2-D slabs (views), in order, so that
     * its rows are rows of the last dimension, as the kernels and row readers take them.
     */
    static List<Piece> matrices(List<Piece> pieces) {
        List<Piece> out = new ArrayList<>();
        for (Piece p : pieces) {
            if (p instanceof Source s && s.tensor().rank() > 2) {
                List<Piece> slabs = new ArrayList<>();
                for (long i = 0; i < s.tensor().shape().dim(0); i++) {
                    slabs.add(new Source(s.tensor().select(i, s.tensor().name() + "[" + i + "]")));
                }
                out.addAll(matrices(slabs));
            } else {
                out.add(p);
            }
        }
        return out;
    }

    /** A region of a source tensor (already narrowed to what is needed; narrowing is free). */
    record Source(Tensor tensor) implements Piece {
        @Override
        public long byteSize() {
            return tensor.byteSize();
        }

        @Override
        public long inputBytes() {
            return tensor.storedBytes();
        }

        @Override
        public String describe() {
            return tensor.name();
        }

        @Override
        public long rows() {
            return tensor.rank() == 0 ? 1 : tensor.shape().dim(0);
        }
    }

    /** Zero bytes: {@code rows} rows of {@code rowBytes} each, e.g. vocabulary padding. */
    record Zeros(long rows, long rowBytes) implements Piece {
        @Override
        public long byteSize() {
            return rows * rowBytes;
        }

        @Override
        public String describe() {
            return "zeros[" + rows + " rows]";
        }
    }
}
