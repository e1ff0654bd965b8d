package dev.moeport.convert;

import dev.moeport.MoeportException;
import dev.moeport.arch.Architecture;
import dev.moeport.arch.LayerKind;
import dev.moeport.arch.ModelConfig;
import dev.moeport.arch.Rule;
import dev.moeport.arch.Transform;
import dev.moeport.plan.Piece;
import dev.moeport.tensor.Tensor;
import dev.moeport.util.NaturalOrder;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.SequencedMap;
import java.util.Set;

/**
 * The export's rule table read the other way: Hugging Face tensors in, Megatron-Core tensors out.
 * Each row's transform merges what export splits (q/k/v into the interleaved {@code linear_qkv},
 * gate and up into {@code [gate ; up]}), and experts are written in the chosen MCore layout.
 */
public final class ImportMapper {
    private ImportMapper() {}

    public static ExportMapper.Result map(Architecture arch, ModelConfig config, SequencedMap<String, Tensor> hf, McoreLayout.Experts layout,
                                          Transform.ImportOptions options) {
        List<java.util.Set<LayerKind>> layers = arch.layers().apply(config);
        long experts = layers.stream().anyMatch(k -> k.contains(LayerKind.MOE)) && arch.rules().stream().anyMatch(Rule::perExpert)
                ? arch.expertCount(config) : 0;
        Set<String> consumed = new HashSet<>();
        List<MappedTensor> out = new ArrayList<>();
        // Stacked experts: the parts of every expert of one tensor, gathered under the stack's name.
        Map<String, List<MappedTensor>> stacks = new LinkedHashMap<>();
        for (Rule rule : arch.rules()) {
            if (rule.kind() == null) {
                apply(rule, "", "", -1, config, hf, options, consumed, out);
            }
        }
        for (int layer = 0; layer < layers.size(); layer++) {
            String mcorePrefix = arch.mcoreLayer().replace("{L}", Integer.toString(layer));
            String hfPrefix = arch.hfLayer().replace("{L}", Integer.toString(layer));
            for (Rule rule : arch.rules()) {
                if (rule.kind() == null || !layers.get(layer).contains(rule.kind())) {
                    continue;
                }
                if (!rule.perExpert()) {
                    apply(rule, mcorePrefix, hfPrefix, -1, config, hf, options, consumed, out);
                    continue;
                }
                for (int e = 0; e < experts; e++) {
                    List<MappedTensor> one = new ArrayList<>();
                    apply(rule, mcorePrefix, hfPrefix, e, config, hf, options, consumed, one);
                    for (MappedTensor t : one) {
                        switch (layout) {
                            case STACKED -> stacks.computeIfAbsent(McoreLayout.stackName(t.name()), k -> new ArrayList<>()).add(t);
                            case SEQUENTIAL -> out.add(renamed(t, McoreLayout.sequentialName(t.name())));
                            default -> out.add(t);
                        }
                    }
                }
            }
        }
        stacks.forEach((name, parts) -> {
            MappedTensor first = parts.getFirst();
            List<Piece> pieces = new ArrayList<>();
            List<String> sources = new ArrayList<>();
            parts.forEach(p -> {
                pieces.addAll(p.pieces());
                sources.addAll(p.sources());
            });
            out.add(new MappedTensor(name, first.dtype(), first.shape().prepend(parts.size()), pieces, sources, null, null, first.keepDtype()));
        });
        List<String> unmapped = hf.keySet().stream().filter(n -> !consumed.contains(n)).sorted(NaturalOrder.INSTANCE).toList();
        return new ExportMapper.Result(out, unmapped);
    }

    private static MappedTensor renamed(MappedTensor t, String name) {
        return new MappedTensor(name, t.dtype(), t.shape(), t.pieces(), t.sources(), t.amaxGroup(), t.amaxPieces(), t.keepDtype());
    }

    private static void apply(Rule rule, String mcorePrefix, String hfPrefix, int expert, ModelConfig config, SequencedMap<String, Tensor> hf,
                              Transform.ImportOptions options, Set<String> consumed, List<MappedTensor> out) {
        List<String> hfNames = rule.hf().stream().map(n -> hfPrefix + ExportMapper.substitute(n, expert)).toList();
        List<String> missing = hfNames.stream().filter(n -> !hf.containsKey(n)).toList();
        if (missing.size() == hfNames.size() && rule.isOptional()) {
            return;
        }
        if (!missing.isEmpty()) {
            throw new MoeportException("missing tensor '" + missing.getFirst() + "'" + (expert >= 0 ? " (expert " + expert + ")" : "")
                    + ", needed for " + rule.describe());
        }
        List<Tensor> tensors = hfNames.stream().map(hf::get).toList();
        for (Tensor t : tensors) {
            ExportMapper.checkShape(rule, t.name(), t.shape(), t, config);
        }
        consumed.addAll(hfNames);
        String mcoreName = mcorePrefix + ExportMapper.substitute(rule.mcore().getFirst(), expert);
        Transform.Part part = rule.transform().toMcore(tensors, mcoreName, config, options);
        out.add(new MappedTensor(part.name(), part.dtype(), part.shape(), part.pieces(), hfNames, null, null, rule.keepsDtype()));
    }
}
