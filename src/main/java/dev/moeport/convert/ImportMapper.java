package dev.moeport.convert;

import dev.moeport.MoeportException;
import dev.moeport.arch.Architecture;
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

    /** @param source the input's location, for messages */
    public static ExportMapper.Result map(Architecture arch, ModelConfig config, SequencedMap<String, Tensor> hf, McoreLayout.Experts layout,
                                          Transform.ImportOptions options, java.nio.file.Path source) {
        Set<String> consumed = new HashSet<>();
        List<MappedTensor> out = new ArrayList<>();
        // Stacked experts: the parts of every expert of one tensor, gathered under the stack's name.
        Map<String, List<MappedTensor>> stacks = new LinkedHashMap<>();
        for (RuleInstance instance : RuleInstance.enumerate(arch, config)) {
            for (MappedTensor t : apply(instance, config, hf, options, source, consumed)) {
                boolean expert = McoreLayout.isCanonicalExpert(t.name());
                if (expert && layout == McoreLayout.Experts.STACKED) {
                    stacks.computeIfAbsent(McoreLayout.stackName(t.name()), k -> new ArrayList<>()).add(t);
                } else if (expert && layout == McoreLayout.Experts.SEQUENTIAL) {
                    out.add(renamed(t, McoreLayout.sequentialName(t.name())));
                } else {
                    out.add(t);
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

    private static List<MappedTensor> apply(RuleInstance instance, ModelConfig config, SequencedMap<String, Tensor> hf,
                                            Transform.ImportOptions options, java.nio.file.Path source, Set<String> consumed) {
        Rule rule = instance.rule();
        List<String> missing = instance.hf().stream().filter(n -> !hf.containsKey(n)).toList();
        if (missing.size() == instance.hf().size() && rule.isOptional()) {
            return List.of();
        }
        if (!missing.isEmpty()) {
            throw new MoeportException(source + ": missing tensor '" + missing.getFirst() + "'" + instance.expertNote() + ", needed for " + rule.describe());
        }
        List<Tensor> tensors = instance.hf().stream().map(hf::get).toList();
        for (int i = 0; i < tensors.size(); i++) {
            rule.checkShape(i, tensors.get(i).where(), tensors.get(i).shape(), config);
        }
        consumed.addAll(instance.hf());
        List<String> mcoreNames = instance.mcore().stream().map(List::getFirst).toList();
        List<MappedTensor> out = new ArrayList<>();
        for (Transform.Part part : rule.transform().toMcore(tensors, mcoreNames, config, options)) {
            out.add(new MappedTensor(part.name(), part.dtype(), part.shape(), part.pieces(), instance.hf(), null, null, rule.keepsDtype()));
        }
        return out;
    }
}
