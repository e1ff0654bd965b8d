package dev.moeport.convert;

import dev.moeport.arch.Architecture;
import dev.moeport.arch.LayerKind;
import dev.moeport.arch.ModelConfig;
import dev.moeport.arch.Rule;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;

/**
 * One application of a rule to a model: its layer, its expert, and the concrete names on both sides.
 * A rule with {@code {e}} on both sides applies once per expert; a rule with {@code {e}} on the MCore
 * side only relates all experts' MCore tensors to one fused HF tensor, and applies once per layer.
 *
 * @param mcore per MCore tensor (one, or one per expert), the accepted names, first the canonical one
 * @param expert the expert number, or -1 (no expert, or all of them)
 */
public record RuleInstance(Rule rule, List<List<String>> mcore, List<String> hf, int layer, int expert) {

    /** Every instance for a model of {@code config}: model-level rules first, then layer by layer. */
    public static List<RuleInstance> enumerate(Architecture arch, ModelConfig config) {
        List<Set<LayerKind>> layers = arch.layers().apply(config);
        boolean moe = layers.stream().anyMatch(k -> k.contains(LayerKind.MOE)) && arch.rules().stream().anyMatch(Rule::perExpert);
        long experts = moe ? arch.expertCount(config) : 0;
        List<RuleInstance> out = new ArrayList<>();
        for (Rule rule : arch.rules()) {
            if (rule.kind() == null) {
                out.add(new RuleInstance(rule, List.of(rule.mcore()), rule.hf(), -1, -1));
            }
        }
        for (int layer = 0; layer < layers.size(); layer++) {
            String mcorePrefix = arch.mcoreLayer().replace("{L}", Integer.toString(layer));
            String hfPrefix = arch.hfLayer().replace("{L}", Integer.toString(layer));
            Set<LayerKind> kinds = layers.get(layer);
            addLayer(out, arch.rules().stream().filter(r -> r.kind() != null && kinds.contains(r.kind())).toList(),
                    mcorePrefix, hfPrefix, layer, experts);
        }
        Architecture.Mtp mtp = arch.mtp();
        long mtpLayers = mtp == null ? 0 : config.intOr(mtp.countKey(), 0);
        List<Set<LayerKind>> block = mtpLayers == 0 ? List.of() : mtp.block().apply(config);
        for (int m = 0; m < mtpLayers; m++) {
            for (int i = 0; i < block.size(); i++) {
                Set<LayerKind> kinds = block.get(i);
                int layer = mtp.hfLayerNumber(config, block.size(), m, i);
                long mtpExperts = kinds.contains(LayerKind.MOE) ? arch.expertCount(config) : 0;
                // transformers does not save MTP weights: every MTP row is optional, as a whole.
                addLayer(out, arch.rules().stream().filter(r -> r.kind() != null && kinds.contains(r.kind())).map(Rule::optional).toList(),
                        mtp.mcoreLayerPrefix(m, i), mtp.hfLayer().replace("{L}", Integer.toString(layer)), layer, mtpExperts);
            }
            String first = Integer.toString(mtp.hfLayerNumber(config, block.size(), m, 0));
            String last = Integer.toString(mtp.hfLayerNumber(config, block.size(), m, block.size() - 1));
            for (Rule rule : mtp.rows()) {
                List<String> hf = rule.hf().stream().map(n -> n.replace("{first}", first).replace("{last}", last)).toList();
                out.add(new RuleInstance(rule.optional(), List.of(names(rule.mcore(), Architecture.Mtp.mcorePrefix(m), -1)), hf,
                        layers.size() + m, -1));
            }
        }
        return out;
    }

    /** The instances of {@code rules} in one layer whose names start with these prefixes. */
    private static void addLayer(List<RuleInstance> out, List<Rule> rules, String mcorePrefix, String hfPrefix, int layer, long experts) {
        for (Rule rule : rules) {
            if (rule.fusedExperts()) {
                List<List<String>> mcore = new ArrayList<>();
                for (int e = 0; e < experts; e++) {
                    mcore.add(names(rule.mcore(), mcorePrefix, e));
                }
                out.add(new RuleInstance(rule, mcore, names(rule.hf(), hfPrefix, -1), layer, -1));
            } else if (rule.perExpert()) {
                for (int e = 0; e < experts; e++) {
                    out.add(new RuleInstance(rule, List.of(names(rule.mcore(), mcorePrefix, e)), names(rule.hf(), hfPrefix, e), layer, e));
                }
            } else {
                out.add(new RuleInstance(rule, List.of(names(rule.mcore(), mcorePrefix, -1)), names(rule.hf(), hfPrefix, -1), layer, -1));
            }
        }
    }

    private static List<String> names(List<String> templates, String prefix, int expert) {
        return templates.stream().map(t -> prefix + (expert < 0 ? t : t.replace("{e}", Integer.toString(expert)))).toList();
    }

    /** " (expert 5)" or "" for messages. */
    public String expertNote() {
        return expert >= 0 ? " (expert " + expert + ")" : "";
    }
}
