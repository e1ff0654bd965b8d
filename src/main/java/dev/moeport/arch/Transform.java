package dev.moeport.arch;

import dev.moeport.MoeportException;
import dev.moeport.plan.Piece;
import dev.moeport.tensor.DType;
import dev.moeport.tensor.PermutedTensor;
import dev.moeport.tensor.Shape;
import dev.moeport.tensor.ShiftedTensor;
import dev.moeport.tensor.Tensor;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * How the Megatron-Core tensors of a rule relate to its Hugging Face tensors, in both directions:
 * {@link #toHf} for export, {@link #toMcore} for import. Most rules relate one MCore tensor to one or
 * more HF tensors; a fused-experts rule relates every expert's MCore tensor to one HF tensor. The
 * results are lists of row ranges ({@link Piece}s) of the sources: zero-copy views, except where the
 * transform reorders elements within rows (GPT-OSS's and Llama 4's transposed experts) or changes values (a
 * zero-centered norm).
 */
public sealed interface Transform {

    /** An output tensor as rows gathered from sources. */
    record Part(String name, DType dtype, Shape shape, List<Piece> pieces) {}

    /** Export: the HF tensors (named {@code hfNames}, in order) made from the MCore tensors (one, or one per expert). */
    List<Part> toHf(List<Tensor> mcore, List<String> hfNames, ModelConfig config);

    /** Import: the MCore tensors ({@code mcoreNames}, one or one per expert) made from the HF tensors (in the rule's order). */
    List<Part> toMcore(List<Tensor> hf, List<String> mcoreNames, ModelConfig config, ImportOptions options);

    /** What import needs beyond the config. */
    record ImportOptions(long vocabMultiple) {}

    /** The same tensor under another name. */
    record Copy() implements Transform {
        @Override
        public List<Part> toHf(List<Tensor> mcore, List<String> hfNames, ModelConfig config) {
            return List.of(whole(hfNames.getFirst(), mcore.getFirst()));
        }

        @Override
        public List<Part> toMcore(List<Tensor> hf, List<String> mcoreNames, ModelConfig config, ImportOptions options) {
            return List.of(whole(mcoreNames.getFirst(), hf.getFirst()));
        }
    }

    /**
     * Embedding and output layer: Megatron pads the vocabulary (rows) to a multiple of 128 x TP; the
     * padding is trimmed on export and restored (zeros) on import.
     */
    record Vocab() implements Transform {
        @Override
        public List<Part> toHf(List<Tensor> sources, List<String> hfNames, ModelConfig config) {
            Tensor mcore = sources.getFirst();
            long vocab = config.requireInt("vocab_size");
            long rows = mcore.shape().dim(0);
            if (rows < vocab) {
                throw new MoeportException(mcore.where() + " has " + rows + " rows, fewer than vocab_size " + vocab + " in " + config.file());
            }
            Tensor trimmed = rows == vocab ? mcore : mcore.narrow(0, vocab, mcore.name() + "[0:" + vocab + "]");
            return List.of(whole(hfNames.getFirst(), trimmed));
        }

        @Override
        public List<Part> toMcore(List<Tensor> hf, List<String> mcoreNames, ModelConfig config, ImportOptions options) {
            Tensor t = hf.getFirst();
            long rows = t.shape().dim(0);
            long padded = (rows + options.vocabMultiple() - 1) / options.vocabMultiple() * options.vocabMultiple();
            List<Piece> pieces = new ArrayList<>(List.of(new Piece.Source(t)));
            if (padded > rows) {
                pieces.add(new Piece.Zeros(padded - rows, t.byteSize() / Math.max(rows, 1)));
            }
            return List.of(new Part(mcoreNames.getFirst(), t.dtype(), t.shape().with(0, padded), pieces));
        }
    }

    /**
     * Fused attention projection. MCore's {@code linear_qkv} rows come in {@code ng} groups (KV heads);
     * group g holds its {@code nh/ng} query heads, then its key head, then its value head, {@code hd}
     * rows each. HF keeps q, k and v apart. Applies to a weight or a bias alike (rows are dim 0).
     */
    record Qkv() implements Transform {
        @Override
        public List<Part> toHf(List<Tensor> mcore, List<String> hfNames, ModelConfig config) {
            Tensor qkv = mcore.getFirst();
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
        public List<Part> toMcore(List<Tensor> hf, List<String> mcoreNames, ModelConfig config, ImportOptions options) {
            Heads h = Heads.of(config);
            sameDtype(hf);
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
            return List.of(new Part(mcoreNames.getFirst(), q.dtype(), q.shape().with(0, h.fusedRows()), pieces));
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
        public List<Part> toHf(List<Tensor> mcore, List<String> hfNames, ModelConfig config) {
            Tensor fc1 = mcore.getFirst();
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
        public List<Part> toMcore(List<Tensor> hf, List<String> mcoreNames, ModelConfig config, ImportOptions options) {
            sameDtype(hf);
            Tensor gate = hf.get(0);
            Tensor up = hf.get(1);
            if (!gate.shape().equals(up.shape())) {
                throw new MoeportException(gate.where() + " " + gate.shape() + " and " + up.where() + " " + up.shape() + " differ in shape");
            }
            return List.of(new Part(mcoreNames.getFirst(), gate.dtype(), gate.shape().with(0, 2 * gate.shape().dim(0)),
                    List.of(new Piece.Source(gate), new Piece.Source(up))));
        }
    }

    /**
     * The same elements with a leading dimension of 1 on the HF side only (ERNIE 4.5's {@code [1, experts]} expert
     * bias, one group, which Megatron keeps as {@code [experts]}).
     */
    record LeadingOne() implements Transform {
        @Override
        public List<Part> toHf(List<Tensor> mcore, List<String> hfNames, ModelConfig config) {
            Tensor t = mcore.getFirst();
            return List.of(new Part(hfNames.getFirst(), t.dtype(), t.shape().prepend(1), List.of(new Piece.Source(t))));
        }

        @Override
        public List<Part> toMcore(List<Tensor> hf, List<String> mcoreNames, ModelConfig config, ImportOptions options) {
            Tensor t = hf.getFirst();
            if (t.rank() < 1 || t.shape().dim(0) != 1) {
                throw new MoeportException(t.where() + " has shape " + t.shape() + "; expected a leading dimension of 1");
            }
            return List.of(new Part(mcoreNames.getFirst(), t.dtype(), t.shape().dropFirst(), List.of(new Piece.Source(t))));
        }
    }

    /**
     * Experts stored as one HF tensor, each expert's matrix transposed and its [gate ; up] rows
     * interleaved (GPT-OSS). MCore expert e, {@code [split*n, rest...]}, viewed as {@code [split, n, rest...]}
     * with its axes reversed and the last two merged, is slab e of the HF tensor. {@code split} is 2 for
     * fc1 (gate row j goes to column 2j, up row j to column 2j+1; the bias likewise) and 1 for fc2 (a
     * plain transpose; its bias a plain stack). Import reverses the view of the HF slab. The orientation
     * comes from the format, never from the shape: GPT-OSS's down_proj is square.
     */
    record InterleavedExperts(int split) implements Transform {
        @Override
        public List<Part> toHf(List<Tensor> mcore, List<String> hfNames, ModelConfig config) {
            List<Piece> slabs = new ArrayList<>();
            for (Tensor expert : mcore) {
                Shape view = splitView(expert.shape());
                slabs.add(new Piece.Source(PermutedTensor.reversedAxes(expert, view, mergeLastTwo(reverse(view)), expert.name() + "^T")));
            }
            Shape slab = mergeLastTwo(reverse(splitView(mcore.getFirst().shape())));
            return List.of(new Part(hfNames.getFirst(), mcore.getFirst().dtype(), slab.prepend(mcore.size()), slabs));
        }

        @Override
        public List<Part> toMcore(List<Tensor> hf, List<String> mcoreNames, ModelConfig config, ImportOptions options) {
            Tensor fused = hf.getFirst();
            if (fused.shape().dim(0) != mcoreNames.size()) {
                throw new MoeportException(fused.where() + " holds " + fused.shape().dim(0) + " experts; the config says " + mcoreNames.size());
            }
            List<Part> parts = new ArrayList<>();
            for (int e = 0; e < mcoreNames.size(); e++) {
                Tensor slab = fused.select(e, fused.name() + "[" + e + "]");
                // The slab is reverse([split, n, rest...]) with its last two merged: split them again, reverse back.
                long[] dims = slab.shape().toArray();
                long merged = dims[dims.length - 1];
                long[] view = java.util.Arrays.copyOf(dims, dims.length + 1);
                view[dims.length - 1] = merged / split;
                view[dims.length] = split;
                Shape mcoreView = reverse(Shape.of(view));
                Shape mcoreShape = mcoreView.dropFirst().with(0, merged);
                parts.add(new Part(mcoreNames.get(e), slab.dtype(), mcoreShape,
                        List.of(new Piece.Source(PermutedTensor.reversedAxes(slab, Shape.of(view), mcoreShape, slab.name() + "^T")))));
            }
            return parts;
        }

        /** {@code [split*n, rest...]} as {@code [split, n, rest...]}. */
        private Shape splitView(Shape mcore) {
            long[] dims = mcore.toArray();
            long[] view = new long[dims.length + 1];
            view[0] = split;
            view[1] = dims[0] / split;
            System.arraycopy(dims, 1, view, 2, dims.length - 1);
            return Shape.of(view);
        }

        private static Shape reverse(Shape s) {
            long[] d = s.toArray();
            long[] r = new long[d.length];
            for (int i = 0; i < d.length; i++) {
                r[i] = d[d.length - 1 - i];
            }
            return Shape.of(r);
        }

        private static Shape mergeLastTwo(Shape s) {
            long[] d = s.toArray();
            long[] r = java.util.Arrays.copyOf(d, d.length - 1);
            r[r.length - 1] = d[d.length - 2] * d[d.length - 1];
            return Shape.of(r);
        }
    }

    /**
     * A norm weight that Megatron-Core keeps zero-centered ({@code x * (1 + w)}) and HF plain ({@code x * w}): MCore = HF - 1,
     * computed in the tensor's dtype (Megatron-Bridge's {@code RMSNorm2ZeroCenteredRMSNormMapping}, for Qwen3-Next's GDN
     * output norm).
     */
    record ZeroCentered() implements Transform {
        @Override
        public List<Part> toHf(List<Tensor> mcore, List<String> hfNames, ModelConfig config) {
            return List.of(whole(hfNames.getFirst(), new ShiftedTensor(mcore.getFirst(), 1f)));
        }

        @Override
        public List<Part> toMcore(List<Tensor> hf, List<String> mcoreNames, ModelConfig config, ImportOptions options) {
            return List.of(whole(mcoreNames.getFirst(), new ShiftedTensor(hf.getFirst(), -1f)));
        }
    }

    /**
     * Rows of named components laid out differently on each side, every piece a row range of a source: a Gated DeltaNet's
     * q, k, v, z, b, a, or a gated attention's q, gate, k, v. A tensor's layout names its components and how many groups
     * interleave them: {@code "q k v z / linear_num_key_heads"} is, group after group, the group's share of q, then of k,
     * v and z (Qwen3-Next's {@code in_proj_qkvz}); without {@code /} the components follow one another whole.
     *
     * @param hf one layout per HF tensor, in the rule's order
     * @param mcore the layout of the MCore tensor
     * @param sizes each component's rows, a {@link TensorShape} dimension
     */
    record Regroup(List<Layout> hf, Layout mcore, Map<String, String> sizes) implements Transform {

        /** Components, group after group; {@code groups} is a {@link TensorShape} dimension ("1" for none). */
        record Layout(List<String> components, String groups) {
            static Layout parse(String text) {
                String[] sides = text.split("/");
                return new Layout(List.of(sides[0].strip().split("\\s+")), sides.length > 1 ? sides[1].strip() : "1");
            }
        }

        /**
         * {@code Regroup.of("q k v z b a", "q k v z / linear_num_key_heads, b a / linear_num_key_heads",
         * "q k: linear_num_key_heads*linear_key_head_dim; v z: ...; b a: linear_num_value_heads")}: the MCore layout, the HF
         * layouts separated by commas, and the components' rows.
         */
        public static Regroup of(String mcore, String hf, String rows) {
            return new Regroup(Arrays.stream(hf.split(",")).map(Layout::parse).toList(), Layout.parse(mcore), TensorShape.namedSizes(rows));
        }

        @Override
        public List<Part> toHf(List<Tensor> mcore, List<String> hfNames, ModelConfig config) {
            Map<String, List<Tensor>> components = split(List.of(mcore.getFirst()), List.of(this.mcore), config);
            List<Part> parts = new ArrayList<>();
            for (int i = 0; i < hf.size(); i++) {
                parts.add(assemble(hfNames.get(i), hf.get(i), components, mcore.getFirst(), config));
            }
            return parts;
        }

        @Override
        public List<Part> toMcore(List<Tensor> hfTensors, List<String> mcoreNames, ModelConfig config, ImportOptions options) {
            sameDtype(hfTensors);
            return List.of(assemble(mcoreNames.getFirst(), mcore, split(hfTensors, hf, config), hfTensors.getFirst(), config));
        }

        private long rowsOf(String component, ModelConfig config) {
            return TensorShape.sizeOf(sizes.get(component), config);
        }

        /** Each component's rows, as row ranges of {@code tensors} in order. */
        private Map<String, List<Tensor>> split(List<Tensor> tensors, List<Layout> layouts, ModelConfig config) {
            Map<String, List<Tensor>> components = new LinkedHashMap<>();
            for (int i = 0; i < tensors.size(); i++) {
                Tensor t = tensors.get(i);
                Layout layout = layouts.get(i);
                long expected = layout.components().stream().mapToLong(c -> rowsOf(c, config)).sum();
                if (t.rank() < 1 || t.shape().dim(0) != expected) {
                    throw new MoeportException(t.where() + " has shape " + t.shape() + "; " + config.file() + " implies " + expected + " rows ("
                            + String.join(" + ", layout.components().stream().map(c -> c + " " + sizes.get(c)).toList()) + ")");
                }
                long groups = groupsOf(layout, config);
                long offset = 0;
                for (long g = 0; g < groups; g++) {
                    for (String c : layout.components()) {
                        long unit = unit(c, groups, layout, config);
                        components.computeIfAbsent(c, k -> new ArrayList<>()).add(t.narrow(offset, unit, t.name() + "[" + offset + ":" + (offset + unit) + "]"));
                        offset += unit;
                    }
                }
            }
            return components;
        }

        /** A tensor of {@code layout} made from the components' rows. */
        private Part assemble(String name, Layout layout, Map<String, List<Tensor>> components, Tensor like, ModelConfig config) {
            long groups = groupsOf(layout, config);
            List<Piece> pieces = new ArrayList<>();
            long total = 0;
            for (long g = 0; g < groups; g++) {
                for (String c : layout.components()) {
                    long unit = unit(c, groups, layout, config);
                    pieces.addAll(rowRange(components.get(c), g * unit, unit));
                    total += unit;
                }
            }
            return new Part(name, like.dtype(), like.shape().with(0, total), pieces);
        }

        private static long groupsOf(Layout layout, ModelConfig config) {
            return TensorShape.sizeOf(layout.groups(), config);
        }

        private long unit(String component, long groups, Layout layout, ModelConfig config) {
            long total = rowsOf(component, config);
            if (groups == 0 || total % groups != 0) {
                throw new MoeportException(config.file() + ": " + component + "'s " + total + " rows (" + sizes.get(component) + ") do not split into "
                        + layout.groups() + " = " + groups + " groups");
            }
            return total / groups;
        }

        /** Rows {@code [start, start + count)} of the rows {@code slices} hold one after the other. */
        private static List<Piece> rowRange(List<Tensor> slices, long start, long count) {
            return dev.moeport.tensor.RowConcatenation.rowRange(slices, start, count, Transform::rangeName).stream()
                    .map(t -> (Piece) new Piece.Source(t)).toList();
        }
    }

    /** Tensors merged into one must share a dtype: their bytes are put side by side. */
    private static void sameDtype(List<Tensor> tensors) {
        for (Tensor t : tensors) {
            if (t.dtype() != tensors.getFirst().dtype()) {
                throw new MoeportException(t.where() + " is " + t.dtype() + " but " + tensors.getFirst().where() + " is "
                        + tensors.getFirst().dtype() + "; they merge into one tensor (give --dtype to cast them alike)");
            }
        }
    }

    private static Part whole(String name, Tensor t) {
        return new Part(name, t.dtype(), t.shape(), List.of(new Piece.Source(t)));
    }

    private static Piece rows(Tensor t, long start, long count) {
        return new Piece.Source(t.narrow(start, count, rangeName(t, start, count)));
    }

    private static String rangeName(Tensor t, long start, long count) {
        return t.name() + "[" + start + ":" + (start + count) + "]";
    }

    private static void expectRows(Tensor t, long rows, ModelConfig config) {
        if (t.shape().dim(0) != rows) {
            throw new MoeportException(t.where() + " has " + t.shape().dim(0) + " rows; " + config.file() + " implies " + rows);
        }
    }
}
