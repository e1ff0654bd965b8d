package dev.moeport.convert;

import dev.moeport.MoeportException;
import dev.moeport.arch.Architecture;
import dev.moeport.arch.HfFusedLayout;
import dev.moeport.plan.Piece;
import dev.moeport.tensor.Tensor;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.SequencedMap;
import java.util.TreeMap;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Hugging Face checkpoints in either of transformers 5's layouts: per-expert ("original") names, which
 * the rule tables use, or fused experts ({@link HfFusedLayout}). Reading a fused checkpoint slices each
 * fused tensor into per-expert views (zero-copy); writing one stacks the per-expert tensors.
 */
public final class HfLayout {
    private HfLayout() {}

    /** {@code tensors} under per-expert names: renames undone, fused experts sliced into views. Already per-expert input is unchanged. */
    public static SequencedMap<String, Tensor> toPerExpert(Architecture arch, SequencedMap<String, Tensor> tensors) {
        HfFusedLayout layout = arch.hfFused();
        Pattern layer = layerPattern(arch);
        SequencedMap<String, Tensor> out = new LinkedHashMap<>();
        for (Map.Entry<String, Tensor> e : tensors.entrySet()) {
            String name = original(layout, e.getKey());
            Tensor t = e.getValue();
            HfFusedLayout.Experts fused = null;
            Matcher m = layer.matcher(name);
            if (m.lookingAt() && t.rank() == 3) {
                String rest = name.substring(m.end());
                fused = layout.experts().stream().filter(x -> x.fused().equals(rest)).findFirst().orElse(null);
            }
            if (fused == null) {
                put(out, name, t);
                continue;
            }
            long parts = fused.perExpert().size();
            long rows = t.shape().dim(1);
            if (rows % parts != 0) {
                throw new MoeportException(t.where() + ": " + rows + " rows cannot hold " + parts + " equal parts " + fused.perExpert());
            }
            for (long x = 0; x < t.shape().dim(0); x++) {
                Tensor slab = t.select(x, t.name() + "[" + x + "]");
                for (int k = 0; k < parts; k++) {
                    Tensor part = parts == 1 ? slab : slab.narrow(k * rows / parts, rows / parts, slab.name() + "[" + (k * rows / parts) + ":" + ((k + 1) * rows / parts) + "]");
                    put(out, m.group() + fused.perExpert().get(k).replace("{e}", Long.toString(x)), part);
                }
            }
        }
        return out;
    }

    /**
     * Per-expert tensors as the fused layout: each layer's experts stacked into the fused tensors, every
     * name rewritten to transformers' in-memory form. Other tensors keep their bytes.
     */
    public static List<MappedTensor> toFused(Architecture arch, SequencedMap<String, Tensor> perExpert) {
        HfFusedLayout layout = arch.hfFused();
        Pattern layer = layerPattern(arch);
        List<MappedTensor> out = new ArrayList<>();
        // fused name -> expert -> its parts, in the order the layout lists them
        Map<String, TreeMap<Integer, Tensor[]>> groups = new LinkedHashMap<>();
        Map<String, HfFusedLayout.Experts> groupLayout = new LinkedHashMap<>();
        for (Map.Entry<String, Tensor> e : perExpert.entrySet()) {
            String name = e.getKey();
            Matcher m = layer.matcher(name);
            boolean grouped = false;
            if (m.lookingAt()) {
                String rest = name.substring(m.end());
                for (HfFusedLayout.Experts fused : layout.experts()) {
                    for (int k = 0; k < fused.perExpert().size() && !grouped; k++) {
                        Matcher x = Pattern.compile(Pattern.quote(fused.perExpert().get(k)).replace("{e}", "\\E(\\d+)\\Q")).matcher(rest);
                        if (x.matches()) {
                            String key = m.group() + fused.fused();
                            groupLayout.put(key, fused);
                            groups.computeIfAbsent(key, g -> new TreeMap<>())
                                    .computeIfAbsent(Integer.parseInt(x.group(1)), i -> new Tensor[fused.perExpert().size()])[k] = e.getValue();
                            grouped = true;
                        }
                    }
                }
            }
            if (!grouped) {
                out.add(MappedTensor.identity(fused(layout, name), e.getValue()));
            }
        }
        groups.forEach((key, experts) -> {
            HfFusedLayout.Experts fused = groupLayout.get(key);
            List<Piece> pieces = new ArrayList<>();
            Tensor first = null;
            long rows = 0;
            for (int x = 0; x < experts.size(); x++) {
                Tensor[] parts = experts.get(x);
                for (int k = 0; k < fused.perExpert().size(); k++) {
                    if (parts == null || parts[k] == null) {
                        throw new MoeportException("missing tensor '" + key.replace(fused.fused(), fused.perExpert().get(k).replace("{e}", Integer.toString(x)))
                                + "' to fuse into " + key);
                    }
                    if (first == null) {
                        first = parts[k];
                    } else if (!parts[k].shape().equals(first.shape()) || parts[k].dtype() != first.dtype()) {
                        throw new MoeportException(parts[k].where() + " is " + parts[k].describe() + ", unlike " + first.where() + " " + first.describe());
                    }
                    pieces.add(new Piece.Source(parts[k]));
                }
                rows = first.shape().dim(0) * fused.perExpert().size();
            }
            var shape = first.shape().with(0, rows).prepend(experts.size());
            out.add(new MappedTensor(fused(layout, key), first.dtype(), shape, pieces, List.of(key), null, null, false));
        });
        return out;
    }

    private static void put(SequencedMap<String, Tensor> out, String name, Tensor t) {
        if (out.putIfAbsent(name, t) != null) {
            throw new MoeportException(t.where() + ": the checkpoint holds '" + name + "' twice (fused and per-expert?)");
        }
    }

    /** A name of transformers' fused layout under the per-expert layout's prefixes (other names are returned as they are). */
    public static String originalName(Architecture arch, String name) {
        return original(arch.hfFused(), name);
    }

    private static String original(HfFusedLayout layout, String name) {
        for (HfFusedLayout.Rename r : layout.renames()) {
            name = name.replaceFirst(r.fusedPattern(), r.toOriginal());
        }
        return name;
    }

    private static String fused(HfFusedLayout layout, String name) {
        for (HfFusedLayout.Rename r : layout.renames()) {
            name = name.replaceFirst(r.originalPattern(), r.toFused());
        }
        return name;
    }

    /** The HF layer prefix as a regex: {@code backbone\.layers\.\d+\.}. */
    private static Pattern layerPattern(Architecture arch) {
        String[] parts = arch.hfLayer().split("\\{L}", -1);
        return Pattern.compile(Pattern.quote(parts[0]) + "\\d+" + Pattern.quote(parts[1]));
    }
}
