package dev.moeport.convert;

import dev.moeport.format.Checkpoint;
import dev.moeport.tensor.Tensor;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.SequencedMap;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * Megatron-Core's three ways of storing routed experts, seen as one: TEGroupedMLP's
 * {@code experts.linear_fc1.weight{e}} is the canonical name the rule tables use; SequentialMLP's
 * {@code experts.local_experts.{e}.linear_fc1.weight} is renamed, and a stacked
 * {@code experts.linear_fc1.weight [E, out, in]} is sliced per expert (each slice a zero-copy view).
 * Quantizer state ({@code *_quantizer.*}) and Transformer Engine {@code _extra_state} are set aside:
 * they are not model tensors.
 */
public final class McoreLayout {
    private static final Pattern SEQUENTIAL = Pattern.compile("(.*\\.experts)\\.local_experts\\.(\\d+)\\.(linear_fc\\d)\\.(weight|bias)");
    private static final Pattern GROUPED = Pattern.compile("(.*\\.experts)\\.(linear_fc\\d)\\.(weight|bias)");

    /** The ways of storing experts, for writing (import's {@code --experts}, synth's {@code --experts-layout}). */
    public enum Experts {
        TE_GROUPED("te"), SEQUENTIAL("sequential"), STACKED("stacked");

        private final String cliName;

        Experts(String cliName) {
            this.cliName = cliName;
        }

        /** The layout of this command-line name ({@code te}, {@code sequential}, {@code stacked}), any case; null if none. */
        public static Experts fromCliName(String name) {
            for (Experts e : values()) {
                if (e.cliName.equalsIgnoreCase(name)) {
                    return e;
                }
            }
            return null;
        }
    }

    /**
     * @param tensors model tensors under canonical names
     * @param quantizerState ModelOpt calibration entries, under their own names
     * @param dropped entries that are neither (Transformer Engine {@code _extra_state})
     */
    public record Canonical(SequencedMap<String, Tensor> tensors, Map<String, Tensor> quantizerState, List<String> dropped) {}

    private McoreLayout() {}

    public static Canonical normalize(Checkpoint checkpoint) {
        SequencedMap<String, Tensor> tensors = new LinkedHashMap<>();
        Map<String, Tensor> quantizer = new LinkedHashMap<>();
        List<String> dropped = new ArrayList<>();
        for (Map.Entry<String, Tensor> e : checkpoint.tensors().entrySet()) {
            String name = e.getKey();
            Tensor t = e.getValue();
            if (isQuantizerState(name)) {
                quantizer.put(name, t);
                continue;
            }
            if (name.contains("._extra_state")) {
                dropped.add(name);
                continue;
            }
            Matcher seq = SEQUENTIAL.matcher(name);
            Matcher grouped = GROUPED.matcher(name);
            if (seq.matches()) {
                tensors.put(seq.group(1) + "." + seq.group(3) + "." + seq.group(4) + seq.group(2), t);
            } else if (grouped.matches() && t.rank() == (grouped.group(3).equals("weight") ? 3 : 2)) {
                for (long i = 0; i < t.shape().dim(0); i++) {
                    tensors.put(name + i, t.select(i, name + "[" + i + "]"));
                }
            } else {
                tensors.put(name, t);
            }
        }
        return new Canonical(Collections.unmodifiableSequencedMap(MegatronSpec.toTransformerEngineNames(tensors)), quantizer, dropped);
    }

    private static final Pattern CANONICAL_EXPERT = Pattern.compile("(.*\\.experts)\\.(linear_fc\\d)\\.(weight|bias)(\\d+)");

    /** A canonical expert weight's grouped module and expert number: {@code experts.linear_fc1.weight7} -> ({@code experts.linear_fc1}, 7). */
    public record ExpertWeight(String module, int expert) {}

    /** The module and expert of a canonical (TEGroupedMLP) expert weight, or null for any other name. */
    public static ExpertWeight expertWeight(String name) {
        Matcher m = CANONICAL_EXPERT.matcher(name);
        return m.matches() && m.group(3).equals("weight") ? new ExpertWeight(m.group(1) + "." + m.group(2), Integer.parseInt(m.group(4))) : null;
    }

    /** Whether {@code name} is a canonical (TEGroupedMLP) expert tensor: {@code experts.linear_fc1.weight7}. */
    public static boolean isCanonicalExpert(String name) {
        return CANONICAL_EXPERT.matcher(name).matches();
    }

    /** The SequentialMLP name of a canonical expert tensor: {@code experts.local_experts.{e}.linear_fc1.weight}. */
    public static String sequentialName(String canonical) {
        Matcher m = CANONICAL_EXPERT.matcher(canonical);
        if (!m.matches()) {
            throw new IllegalArgumentException("not an expert tensor: " + canonical);
        }
        return m.group(1) + ".local_experts." + m.group(4) + "." + m.group(2) + "." + m.group(3);
    }

    /** The name of the stacked tensor a canonical expert tensor belongs to: {@code experts.linear_fc1.weight}. */
    public static String stackName(String canonical) {
        Matcher m = CANONICAL_EXPERT.matcher(canonical);
        if (!m.matches()) {
            throw new IllegalArgumentException("not an expert tensor: " + canonical);
        }
        return m.group(1) + "." + m.group(2) + "." + m.group(3);
    }

    /** Whether a checkpoint uses Megatron-Core names ({@code decoder.layers...}, {@code embedding...}). */
    public static boolean isMcore(java.util.Collection<String> names) {
        return names.stream().anyMatch(n -> n.startsWith("decoder.") || n.startsWith("embedding.word_embeddings"));
    }

    /**
     * ModelOpt's quantizer entries: {@code <module>.weight_quantizer._amax}, {@code input_quantizer._amax}, ...,
     * and a TEGroupedMLP's per-expert {@code weight_quantizer.<e>._amax} (Model Optimizer since PR 1550).
     */
    public static boolean isQuantizerState(String name) {
        return QUANTIZER_STATE.matcher(name).matches();
    }

    private static final Pattern QUANTIZER_STATE = Pattern.compile(".*_quantizer(\\.\\d+)?\\.[^.]+");
}
