package dev.moeport.convert;

import dev.moeport.MoeportException;
import dev.moeport.arch.Architecture;
import dev.moeport.arch.LayerKind;
import dev.moeport.arch.ModelConfig;
import dev.moeport.arch.Rule;
import dev.moeport.arch.Transform;
import dev.moeport.plan.Piece;
import dev.moeport.tensor.Shape;
import dev.moeport.tensor.Tensor;
import dev.moeport.util.NaturalOrder;
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

    /** The result: HF tensors in rule order, and input tensors that no row consumed. */
    public record Result(List<MappedTensor> tensors, List<String> unmapped) {}

    private ExportMapper() {}

    public static Result map(Architecture arch, ModelConfig config, SequencedMap<String, Tensor> input) {
        List<Set<LayerKind>> layers = arch.layers().apply(config);
        long experts = arch.rules().stream().anyMatch(r -> r.kind() == LayerKind.MOE && r.perExpert()) && layers.stream().anyMatch(k -> k.contains(LayerKind.MOE))
                ? arch.expertCount(config) : 0;
        Set<String> consumed = new HashSet<>();
        List<MappedTensor> out = new ArrayList<>();
        for (Rule rule : arch.rules()) {
            if (rule.kind() == null) {
                apply(rule, "", "", -1, config, input, consumed, out);
            }
        }
        for (int layer = 0; layer < layers.size(); layer++) {
            String mcorePrefix = arch.mcoreLayer().replace("{L}", Integer.toString(layer));
            String hfPrefix = arch.hfLayer().replace("{L}", Integer.toString(layer));
            for (Rule rule : arch.rules()) {
                if (rule.kind() == null || !layers.get(layer).contains(rule.kind())) {
                    continue;
                }
                if (rule.perExpert()) {
                    for (int e = 0; e < experts; e++) {
                        apply(rule, mcorePrefix, hfPrefix, e, config, input, consumed, out);
                    }
                } else {
                    apply(rule, mcorePrefix, hfPrefix, -1, config, input, consumed, out);
                }
            }
        }
        List<String> unmapped = input.keySet().stream().filter(n -> !consumed.contains(n)).sorted(NaturalOrder.INSTANCE).toList();
        checkUnique(out);
        return new Result(out, unmapped);
    }

    private static void apply(Rule rule, String mcorePrefix, String hfPrefix, int expert, ModelConfig config,
                              SequencedMap<String, Tensor> input, Set<String> consumed, List<MappedTensor> out) {
        List<String> candidates = rule.mcore().stream().map(n -> mcorePrefix + substitute(n, expert)).toList();
        String found = candidates.stream().filter(input::containsKey).findFirst().orElse(null);
        if (found == null) {
            if (rule.isOptional()) {
                return;
            }
            throw new MoeportException("missing tensor '" + candidates.getFirst() + "'"
                    + (candidates.size() > 1 ? " (or " + String.join(", ", candidates.subList(1, candidates.size())) + ")" : "")
                    + (expert >= 0 ? " (expert " + expert + ")" : "") + ", needed for " + rule.describe());
        }
        consumed.add(found);
        Tensor source = input.get(found);
        List<String> hfNames = rule.hf().stream().map(n -> hfPrefix + substitute(n, expert)).toList();
        List<Transform.Part> parts = rule.transform().toHf(source, hfNames, config);
        for (Transform.Part part : parts) {
            checkShape(rule, part.name(), part.shape(), source, config);
            boolean split = parts.size() > 1;
            out.add(new MappedTensor(part.name(), part.dtype(), part.shape(), part.pieces(), List.of(found), split ? found : null,
                    split ? List.of(new Piece.Source(source)) : null, rule.keepsDtype()));
        }
    }

    static String substitute(String template, int expert) {
        return expert < 0 ? template : template.replace("{e}", Integer.toString(expert));
    }

    /** Checks an HF tensor (made or given) against the rule's expected shape, dimension by dimension, where the config has the size. */
    static void checkShape(Rule rule, String hfName, Shape shape, Tensor source, ModelConfig config) {
        if (rule.shape() == null) {
            return;
        }
        if (shape.rank() != rule.shape().size()) {
            throw new MoeportException(source.where() + " gives " + hfName + " of shape " + shape + ", expected "
                    + rule.shape().size() + " dimensions " + rule.shape());
        }
        for (int i = 0; i < shape.rank(); i++) {
            String key = rule.shape().get(i);
            if (key.equals("*") || !config.has(key)) {
                continue;
            }
            long expected = config.requireInt(key);
            if (shape.dim(i) != expected) {
                throw new MoeportException(source.where() + " has shape " + source.shape() + " but " + config.file() + " gives "
                        + key + " = " + expected + " for dimension " + i + " of " + hfName + " (config does not match the checkpoint)");
            }
        }
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
