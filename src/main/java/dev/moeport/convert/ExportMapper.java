package dev.moeport.convert;

import dev.moeport.MoeportException;
import dev.moeport.arch.Architecture;
import dev.moeport.arch.ModelConfig;
import dev.moeport.arch.Rule;
import dev.moeport.arch.Transform;
import dev.moeport.plan.Piece;
import dev.moeport.tensor.Tensor;
import dev.moeport.util.NaturalOrder;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.SequencedMap;
import java.util.Set;

/**
 * Applies an architecture's rule table to a canonical Megatron-Core checkpoint: for every layer (by
 * its kinds) and every routed expert, each row names the MCore tensor it needs and the HF tensors it
 * makes. Every expected tensor must be present (or its row optional); every input tensor must be
 * consumed by some row.
 */
public final class ExportMapper {

    /** The result: tensors in rule order, and input tensors that no row consumed. */
    public record Result(List<MappedTensor> tensors, List<String> unmapped) {
        /**
         * Refuses unmapped input tensors unless the user allowed them; then returns the note saying
         * which were skipped (none when all were mapped).
         */
        public List<String> requireMapped(Path input, Architecture arch, boolean allowUnmapped, String hint) {
            if (unmapped.isEmpty()) {
                return List.of();
            }
            String list = sample(unmapped, 5);
            if (!allowUnmapped) {
                throw new MoeportException(input + ": " + unmapped.size() + " tensor(s) not mapped by any " + arch.name() + " rule: " + list
                        + " (" + hint + "--allow-unmapped skips them)");
            }
            return List.of("skipped " + unmapped.size() + " unmapped tensor(s): " + list);
        }
    }

    private ExportMapper() {}

    /** @param source the input's location, for messages */
    public static Result map(Architecture arch, ModelConfig config, SequencedMap<String, Tensor> input, Path source) {
        Set<String> consumed = new HashSet<>();
        List<MappedTensor> out = new ArrayList<>();
        for (RuleInstance instance : RuleInstance.enumerate(arch, config)) {
            apply(instance, config, input, source, consumed, out);
        }
        List<String> unmapped = input.keySet().stream().filter(n -> !consumed.contains(n)).sorted(NaturalOrder.INSTANCE).toList();
        checkUnique(out);
        return new Result(out, unmapped);
    }

    private static void apply(RuleInstance instance, ModelConfig config, SequencedMap<String, Tensor> input, Path source, Set<String> consumed,
                              List<MappedTensor> out) {
        Rule rule = instance.rule();
        List<Tensor> sources = new ArrayList<>();
        List<String> names = new ArrayList<>();
        for (List<String> candidates : instance.mcore()) {
            String found = candidates.stream().filter(input::containsKey).findFirst().orElse(null);
            Tensor sections = found == null ? joinedSections(candidates.getFirst(), rule, config, input, source, consumed) : null;
            if (found == null && sections == null) {
                if (rule.isOptional() && sources.isEmpty()) {
                    return;
                }
                throw new MoeportException(source + ": missing tensor '" + candidates.getFirst() + "'"
                        + (candidates.size() > 1 ? " (or " + String.join(", ", candidates.subList(1, candidates.size())) + ")" : "")
                        + instance.expertNote() + ", needed for " + rule.describe());
            }
            if (found != null) {
                consumed.add(found);
            }
            sources.add(found != null ? input.get(found) : sections);
            names.add(found != null ? found : candidates.getFirst());
        }
        List<Transform.Part> parts = rule.transform().toHf(sources, instance.hf(), config);
        for (int i = 0; i < parts.size(); i++) {
            Transform.Part part = parts.get(i);
            rule.checkShape(i, "tensor '" + part.name() + "' (made from " + sources.getFirst().where() + ")", part.shape(), config);
            // Parts split from one tensor (q/k/v, gate/up) share its amax: one global scale for one fused GEMM.
            boolean split = parts.size() > 1;
            out.add(new MappedTensor(part.name(), part.dtype(), part.shape(), part.pieces(), names, split ? names.getFirst() : null,
                    split ? List.of(new Piece.Source(sources.getFirst())) : null, rule.keepsDtype()));
        }
    }

    /**
     * Tensor {@code name} read back from the row sections Megatron-Core's torch_dist saves it as ({@code <name>.<section>},
     * {@link Rule#torchDistSplit}), each section's rows checked against the config; null when no section is there.
     */
    private static Tensor joinedSections(String name, Rule rule, ModelConfig config, SequencedMap<String, Tensor> input, Path source,
                                         Set<String> consumed) {
        List<String> keys = rule.torchDistSections().keySet().stream().map(section -> name + "." + section).toList();
        if (keys.stream().noneMatch(input::containsKey)) {
            return null;
        }
        String absent = keys.stream().filter(k -> !input.containsKey(k)).findFirst().orElse(null);
        if (absent != null) {
            throw new MoeportException(source + ": missing tensor '" + absent + "'; Megatron-Core saves '" + name + "' as "
                    + String.join(", ", keys));
        }
        List<Tensor> parts = new ArrayList<>();
        java.util.Iterator<Long> rows = rule.torchDistRows(config).values().iterator();
        for (String key : keys) {
            Tensor part = input.get(key);
            long expected = rows.next();
            if (part.rank() < 1 || part.shape().dim(0) != expected) {
                throw new MoeportException(part.where() + " has shape " + part.shape() + " but " + config.file() + " implies " + expected
                        + " rows (" + rule.torchDistSections().get(key.substring(name.length() + 1)) + "); the config does not match the checkpoint");
            }
            parts.add(part);
        }
        consumed.addAll(keys);
        return new dev.moeport.tensor.RowConcatenation(name, parts);
    }

    private static void checkUnique(List<MappedTensor> out) {
        Set<String> names = new LinkedHashSet<>();
        for (MappedTensor t : out) {
            if (!names.add(t.name())) {
                throw new IllegalStateException("rule table maps two tensors to '" + t.name() + "'");
            }
        }
    }

    /** A readable list of at most {@code max} names. */
    public static String sample(List<String> names, int max) {
        return names.size() <= max ? String.join(", ", names)
                : String.join(", ", names.subList(0, max)) + " and " + (names.size() - max) + " more";
    }
}
