package dev.moeport.convert;

import dev.moeport.util.Glob;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;

/**
 * Which weights get quantized: every weight of a linear layer ({@code *.weight} of rank 2 or more),
 * except the architecture's default exclusions and the user's {@code --exclude} patterns; when the
 * user gives {@code --include} patterns, only modules matching one of them. Patterns match HF module
 * names ({@code backbone.layers.1.mixer.q_proj}) or, equally, the tensor name with {@code .weight}.
 */
public record QuantSelection(List<Glob> defaultExclusions, List<Glob> include, List<Glob> exclude, Set<Glob> matched) {

    public static QuantSelection of(List<String> defaults, List<String> include, List<String> exclude) {
        return new QuantSelection(globs(defaults), globs(include), globs(exclude), ConcurrentHashMap.newKeySet());
    }

    /**
     * The user's patterns that matched no linear weight among those {@link #quantizes} was asked about,
     * as {@code --include 'PATTERN'}: most likely a typo, or names of the other layout.
     */
    public List<String> unmatched() {
        List<String> unmatched = new ArrayList<>();
        include.stream().filter(g -> !matched.contains(g)).forEach(g -> unmatched.add("--include '" + g + "'"));
        exclude.stream().filter(g -> !matched.contains(g)).forEach(g -> unmatched.add("--exclude '" + g + "'"));
        return unmatched;
    }

    /** Whether {@code tensor} is a linear layer's weight (a candidate for quantization at all). */
    public static boolean isLinearWeight(String name, int rank) {
        return name.endsWith(".weight") && rank >= 2;
    }

    /** Experts of a layer stored in one 3-D tensor without a {@code .weight} suffix, as GPT-OSS does ({@code mlp.experts.gate_up_proj}). */
    public static boolean isFusedExperts(String name, int rank) {
        return rank == 3 && name.matches(".*\\.experts\\.[a-z_]+_proj");
    }

    public boolean quantizes(String name, int rank) {
        return isLinearWeight(name, rank) && selects(name, module(name));
    }

    /** Whether a fused expert tensor (GPT-OSS's, named like a module) is quantized, where a format quantizes those. */
    public boolean quantizesFusedExperts(String name) {
        return selects(name, name);
    }

    private boolean selects(String name, String module) {
        for (List<Glob> user : List.of(include, exclude)) {
            for (Glob g : user) {
                if (g.matches(module) || g.matches(name)) {
                    matched.add(g);
                }
            }
        }
        if (matches(defaultExclusions, name, module) || matches(exclude, name, module)) {
            return false;
        }
        return include.isEmpty() || matches(include, name, module);
    }

    /** {@code a.b.weight} -> {@code a.b}. */
    public static String module(String weightName) {
        return weightName.substring(0, weightName.length() - ".weight".length());
    }

    private static boolean matches(List<Glob> globs, String name, String module) {
        return Glob.anyMatches(globs, module) || Glob.anyMatches(globs, name);
    }

    private static List<Glob> globs(List<String> patterns) {
        return patterns.stream().map(Glob::of).toList();
    }
}
