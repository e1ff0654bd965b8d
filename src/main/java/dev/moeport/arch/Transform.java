package dev.moeport.arch;

import dev.moeport.MoeportException;
import dev.moeport.plan.Piece;
import dev.moeport.tensor.DType;
import dev.moeport.tensor.Shape;
import dev.moeport.tensor.Tensor;
import java.util.ArrayList;
import java.util.List;

/**
 * How the Megatron-Core tensor of a rule relates to its Hugging Face tensors, in both directions:
 * {@link #toHf} for export, {@link #toMcore} for import. Every transform here only moves whole rows,
 * so both directions are lists of zero-copy row ranges ({@link Piece}s) of the sources.
 */
public sealed interface Transform {

    /** An output tensor as rows gathered from sources. */
    record Part(String name, DType dtype, Shape shape, List<Piece> pieces) {}

    /** Export: the HF tensors (named {@code hfNames}, in order) made from {@code mcore}. */
    List<Part> toHf(Tensor mcore, List<String> hfNames, ModelConfig config);

    /** Import: the MCore tensor {@code mcoreName} made from the HF tensors (in the rule's order). */
    Part toMcore(List<Tensor> hf, String mcoreName, ModelConfig config, ImportOptions options);

    /** What import needs beyond the config. */
    record ImportOptions(long vocabMultiple) {}

    /** The same tensor under another name. */
    record Copy() implements Transform {
        @Override
        public List<Part> toHf(Tensor mcore, List<String> hfNames, ModelConfig config) {
            return List.of(whole(hfNames.getFirst(), mcore));
        }

        @Override
        public Part toMcore(List<Tensor> hf, String mcoreName, ModelConfig config, ImportOptions options) {
            return whole(mcoreName, hf.getFirst());
        }
    }

    /**
     * Embedding and output layer: Megatron pads the vocabulary (rows) to a multiple of 128 x TP; the
     * padding is trimmed on export and restored (zeros) on import.
     */
    record Vocab() implements Transform {
        @Override
        public List<Part> toHf(Tensor mcore, List<String> hfNames, ModelConfig config) {
            long vocab = config.requireInt("vocab_size");
            long rows = mcore.shape().dim(0);
            if (rows < vocab) {
                throw new MoeportException(mcore.where() + " has " + rows + " rows, fewer than vocab_size " + vocab + " in " + config.file());
            }
            Tensor trimmed = rows == vocab ? mcore : mcore.narrow(0, vocab, mcore.name() + "[0:" + vocab + "]");
            return List.of(whole(hfNames.getFirst(), trimmed));
        }

        @Override
        public Part toMcore(List<Tensor> hf, String mcoreName, ModelConfig config, ImportOptions options) {
            Tensor t = hf.getFirst();
            long rows = t.shape().dim(0);
            long padded = (rows + options.vocabMultiple() - 1) / options.vocabMultiple() * options.vocabMultiple();
            List<Piece> pieces = new ArrayList<>(List.of(new Piece.Source(t)));
            if (padded > rows) {
                pieces.add(new Piece.Zeros(padded - rows, t.byteSize() / Math.max(rows, 1)));
            }
            return new Part(mcoreName, t.dtype(), t.shape().with(0, padded), pieces);
        }
    }

    /**
     * Fused attention projection. MCore's {@code linear_qkv} rows come in {@code ng} groups (KV heads);
     * group g holds its {@code nh/ng} query heads, then its key head, then its value head, {@code hd}
     * rows each. HF keeps q, k and v apart. Applies to a weight or a bias alike (rows are dim 0).
     */
    record Qkv() implements Transform {
        @Override
        public List<Part> toHf(Tensor qkv, List<String> hfNames, ModelConfig config) {
            Heads h = Heads.of(config);
            long rows = qkv.shape().dim(0);
            if (rows != h.fusedRows()) {
                throw new MoeportException(qkv.where() + " has " + rows + " rows, but " + config.file() + " gives (num_attention_heads "
                        + h.nh + " + 2 x num_key_value_heads " + h.ng + ") x head_dim " + h.hd + " = " + h.fusedRows());
            }
            long groupRows = (h.qPerGroup() + 2) * h.hd;
            List<Piece> q = new ArrayList<>();
            List<Piece> k = new ArrayList<>();
            List<Piece> v = new ArrayList<>();
            for (long g = 0; g < h.ng; g++) {
                long base = g * groupRows;
                q.add(rows(qkv, base, h.qPerGroup() * h.hd));
                k.add(rows(qkv, base + h.qPerGroup() * h.hd, h.hd));
                v.add(rows(qkv, base + (h.qPerGroup() + 1) * h.hd, h.hd));
            }
            return List.of(
                    new Part(hfNames.get(0), qkv.dtype(), qkv.shape().with(0, h.nh * h.hd), q),
                    new Part(hfNames.get(1), qkv.dtype(), qkv.shape().with(0, h.ng * h.hd), k),
                    new Part(hfNames.get(2), qkv.dtype(), qkv.shape().with(0, h.ng * h.hd), v));
        }

        @Override
        public Part toMcore(List<Tensor> hf, String mcoreName, ModelConfig config, ImportOptions options) {
            Heads h = Heads.of(config);
            Tensor q = hf.get(0);
            Tensor k = hf.get(1);
            Tensor v = hf.get(2);
            expectRows(q, h.nh * h.hd, config);
            expectRows(k, h.ng * h.hd, config);
            expectRows(v, h.ng * h.hd, config);
            List<Piece> pieces = new ArrayList<>();
            for (long g = 0; g < h.ng; g++) {
                pieces.add(rows(q, g * h.qPerGroup() * h.hd, h.qPerGroup() * h.hd));
                pieces.add(rows(k, g * h.hd, h.hd));
                pieces.add(rows(v, g * h.hd, h.hd));
            }
            return new Part(mcoreName, q.dtype(), q.shape().with(0, h.fusedRows()), pieces);
        }

        private record Heads(long nh, long ng, long hd) {
            static Heads of(ModelConfig config) {
                long nh = config.requireInt("num_attention_heads");
                long ng = config.intOr("num_key_value_heads", nh);
                long hd = config.has("head_dim") ? config.requireInt("head_dim") : config.requireInt("hidden_size") / nh;
                if (ng == 0 || nh % ng != 0) {
                    throw new MoeportException(config.file() + ": num_attention_heads " + nh + " is not a multiple of num_key_value_heads " + ng);
                }
                return new Heads(nh, ng, hd);
            }

            long qPerGroup() {
                return nh / ng;
            }

            long fusedRows() {
                return (nh + 2 * ng) * hd;
            }
        }
    }

    /** A gated MLP's fc1: MCore {@code [gate ; up]} along rows, HF {@code gate_proj} and {@code up_proj}. */
    record Gated() implements Transform {
        @Override
        public List<Part> toHf(Tensor fc1, List<String> hfNames, ModelConfig config) {
            long rows = fc1.shape().dim(0);
            if (rows % 2 != 0) {
                throw new MoeportException(fc1.where() + " has an odd number of rows (" + rows + "); a gated fc1 holds [gate ; up]");
            }
            long half = rows / 2;
            return List.of(
                    new Part(hfNames.get(0), fc1.dtype(), fc1.shape().with(0, half), List.of(rows(fc1, 0, half))),
                    new Part(hfNames.get(1), fc1.dtype(), fc1.shape().with(0, half), List.of(rows(fc1, half, half))));
        }

        @Override
        public Part toMcore(List<Tensor> hf, String mcoreName, ModelConfig config, ImportOptions options) {
            Tensor gate = hf.get(0);
            Tensor up = hf.get(1);
            if (!gate.shape().equals(up.shape())) {
                throw new MoeportException(gate.where() + " " + gate.shape() + " and " + up.where() + " " + up.shape() + " differ in shape");
            }
            return new Part(mcoreName, gate.dtype(), gate.shape().with(0, 2 * gate.shape().dim(0)),
                    List.of(new Piece.Source(gate), new Piece.Source(up)));
        }
    }

    private static Part whole(String name, Tensor t) {
        return new Part(name, t.dtype(), t.shape(), List.of(new Piece.Source(t)));
    }

    private static Piece rows(Tensor t, long start, long count) {
        return new Piece.Source(t.narrow(start, count, t.name() + "[" + start + ":" + (start + count) + "]"));
    }

    private static void expectRows(Tensor t, long rows, ModelConfig config) {
        if (t.shape().dim(0) != rows) {
            throw new MoeportException(t.where() + " has " + t.shape().dim(0) + " rows; " + config.file() + " implies " + rows);
        }
    }
}
