package dev.moeport.convert;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.moeport.MoeportException;
import dev.moeport.io.IoErrors;
import dev.moeport.quant.QuantFormat;
import dev.moeport.util.Glob;
import java.io.IOException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.concurrent.ConcurrentHashMap;

/**
 * A mixed-precision recipe ({@code --recipe FILE}): which format each module gets, by the first rule whose glob
 * (fnmatch's rules, on the HF module name) matches it; a module no rule matches, or one whose rule says {@code bf16},
 * stays in its dtype. The file is JSON:
 * <pre>
 * {"rules": [
 *   {"modules": "*.mlp.experts.*", "format": "nvfp4"},
 *   {"modules": "*.self_attn.*", "format": "fp8"}
 * ]}
 * </pre>
 * The default exclusions (embeddings, lm_head, routers, MTP layers) and {@code --exclude} still apply.
 */
public final class Recipe {
    /** The format name that keeps a module in its dtype. */
    public static final String KEEP = "bf16";
    private static final ObjectMapper JSON = new ObjectMapper()
            .enable(com.fasterxml.jackson.databind.DeserializationFeature.FAIL_ON_TRAILING_TOKENS);

    /** One rule: modules matching {@code modules} get {@code format} (null: kept in their dtype). */
    private record Rule(Glob modules, QuantFormat format) {}

    private final Path file;
    private final List<Rule> rules;
    private final Set<Rule> matched = ConcurrentHashMap.newKeySet();

    private Recipe(Path file, List<Rule> rules) {
        this.file = file;
        this.rules = rules;
    }

    /** Reads a recipe file, refusing anything but the form above in one line naming the file and the rule. */
    public static Recipe read(Path file) {
        JsonNode root;
        try {
            root = JSON.readTree(file.toFile());
        } catch (IOException e) {
            throw new MoeportException(file + ": cannot read the recipe (" + IoErrors.why(e) + ")", e);
        }
        JsonNode list = root == null ? null : root.get("rules");
        if (list == null || !list.isArray() || list.isEmpty() || root.size() != 1) {
            throw new MoeportException(file + ": a recipe is {\"rules\": [{\"modules\": GLOB, \"format\": FORMAT}, ...]} with at least one rule");
        }
        List<Rule> rules = new ArrayList<>();
        for (int i = 0; i < list.size(); i++) {
            JsonNode r = list.get(i);
            String where = file + ": rule " + (i + 1);
            JsonNode modules = r.get("modules");
            JsonNode format = r.get("format");
            if (!r.isObject() || r.size() != 2 || modules == null || !modules.isTextual() || format == null || !format.isTextual()) {
                throw new MoeportException(where + " is not {\"modules\": GLOB, \"format\": FORMAT}");
            }
            if (modules.asText().isBlank()) {
                throw new MoeportException(where + ": the modules pattern is empty");
            }
            QuantFormat f;
            if (format.asText().equalsIgnoreCase(KEEP)) {
                f = null;
            } else {
                try {
                    f = QuantFormat.fromCliName(format.asText());
                } catch (IllegalArgumentException e) {
                    throw new MoeportException(where + ": " + e.getMessage() + " or " + KEEP);
                }
            }
            rules.add(new Rule(Glob.of(modules.asText()), f));
        }
        return new Recipe(file, List.copyOf(rules));
    }

    /** The format of {@code module} (its weight's name {@code <module>.weight} matches too), or null to keep it. */
    public QuantFormat formatOf(String module) {
        for (Rule r : rules) {
            if (r.modules.matches(module) || r.modules.matches(module + ".weight")) {
                matched.add(r);
                return r.format;
            }
        }
        return null;
    }

    /** Every format a rule names, in the order of the rules. */
    public List<QuantFormat> formats() {
        return rules.stream().map(Rule::format).filter(java.util.Objects::nonNull).distinct().toList();
    }

    /** Refuses, in one line, a rule that matched none of the modules asked about: most likely a typo. */
    public void requireEveryRuleMatched() {
        for (int i = 0; i < rules.size(); i++) {
            if (!matched.contains(rules.get(i))) {
                throw new MoeportException(file + ": rule " + (i + 1) + " ('" + rules.get(i).modules.text()
                        + "') matches no linear weight, or only ones an earlier rule or a default exclusion takes");
            }
        }
    }
}
