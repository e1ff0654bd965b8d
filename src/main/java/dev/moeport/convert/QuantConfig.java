package dev.moeport.convert;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.moeport.quant.QuantFormat;
import java.util.List;

/**
 * The quantization description serving engines read, in ModelOpt's two forms: {@code hf_quant_config.json}
 * (TensorRT-LLM's source of truth) and {@code quantization_config} in {@code config.json} (what vLLM and
 * SGLang read first). Both name the algorithm as ModelOpt does and list the linear modules left
 * unquantized, by their exact HF names.
 */
public final class QuantConfig {
    private static final ObjectMapper JSON = new ObjectMapper();

    private QuantConfig() {}

    private static ObjectNode producer(String version) {
        return JSON.createObjectNode().put("name", "moeport").put("version", version);
    }

    /** {@code hf_quant_config.json}. */
    public static ObjectNode hfQuantConfig(QuantFormat format, List<String> excluded, String version) {
        ObjectNode root = JSON.createObjectNode();
        root.set("producer", producer(version));
        ObjectNode q = root.putObject("quantization");
        QuantFormat.Modelopt names = format.modelopt();
        q.put("quant_algo", names.quantAlgo());
        q.putNull("kv_cache_quant_algo");
        if (names.groupSize() > 0) {
            q.put("group_size", names.groupSize());
        }
        if (names.awq()) {
            q.put("has_zero_point", false);
            q.put("pre_quant_scale", false);
        }
        ArrayNode list = q.putArray("exclude_modules");
        excluded.stream().sorted().forEach(list::add);
        return root;
    }

    /**
     * The JSON files of a quantized output: {@code hf_quant_config.json}, and {@code config.json} (when
     * there is one to start from) with its {@code quantization_config}.
     */
    public static java.util.Map<String, com.fasterxml.jackson.databind.JsonNode> files(QuantFormat format, ObjectNode modelConfig,
                                                                                     OutputPlanner.Planned planned, String version) {
        java.util.Map<String, com.fasterxml.jackson.databind.JsonNode> files = new java.util.LinkedHashMap<>();
        List<String> excluded = excludeModules(planned.unquantizedModules(), planned.quantizedModules());
        if (modelConfig != null) {
            modelConfig.set("quantization_config", quantizationConfig(format, excluded, planned.staticInputScales(), version));
            files.put(dev.moeport.arch.ModelConfig.FILE_NAME, modelConfig);
        }
        files.put(HfOutputFolder.QUANT_CONFIG, hfQuantConfig(format, excluded, version));
        return files;
    }

    /**
     * {@code exclude_modules} in Model Optimizer's wildcard forms (0.47, modelopt/torch/export/quant_utils.py,
     * {@code _prefix_wildcard_summarize_exclude_modules}): each unquantized module, in order, becomes the first of
     * {@code <prefix>*} and {@code <prefix>.*} (prefixes cut at each dot, shortest first), or else its own name, that
     * names no quantized module and its prefixes, unless what it would add is already there. So a whole unquantized
     * layer is one {@code model.layers.61*}, while a router among quantized experts keeps its name. Sorted.
     */
    public static List<String> excludeModules(List<String> unquantized, List<String> quantized) {
        java.util.NavigableSet<String> quantizedNames = new java.util.TreeSet<>(quantized);
        java.util.Set<String> summary = new java.util.TreeSet<>();
        for (String module : unquantized) {
            List<String> chosen = List.of();
            for (List<String> wildcards : prefixWildcards(module)) {
                if (wildcards.stream().anyMatch(w -> namesQuantized(w, quantizedNames))) {
                    continue;
                }
                chosen = summary.containsAll(wildcards) ? List.of() : wildcards;
                break;
            }
            // The pair {prefix, prefix.*} is written as prefix.* alone (its last), as Model Optimizer deploys it.
            if (!chosen.isEmpty()) {
                summary.add(chosen.getLast());
            }
        }
        return List.copyOf(summary);
    }

    /** {@code <prefix>*}, then {@code {<prefix>, <prefix>.*}} for each prefix ending before a dot, then the name itself. */
    private static List<List<String>> prefixWildcards(String name) {
        List<List<String>> out = new java.util.ArrayList<>();
        for (int i = 0; i < name.length(); i++) {
            if (name.charAt(i) == '.') {
                out.add(List.of(name.substring(0, i) + "*"));
                out.add(List.of(name.substring(0, i), name.substring(0, i) + ".*"));
            }
        }
        out.add(List.of(name));
        return out;
    }

    /** Whether a prefix wildcard (or exact name) is one Model Optimizer rules out: it names a quantized module or a prefix of one. */
    private static boolean namesQuantized(String wildcard, java.util.NavigableSet<String> quantized) {
        if (!wildcard.endsWith("*")) {
            return quantized.contains(wildcard);
        }
        String prefix = wildcard.substring(0, wildcard.length() - 1);
        String next = quantized.ceiling(prefix);
        return next != null && next.startsWith(prefix);
    }

    /**
     * {@code quantization_config} for {@code config.json}; {@code config_groups} for the formats with static input
     * scales (fp8, nvfp4), as ModelOpt describes them: float weights and inputs of the format's element bits, in
     * groups of its block size where it has blocks.
     */
    public static ObjectNode quantizationConfig(QuantFormat format, List<String> excluded, boolean staticInputScales, String version) {
        ObjectNode root = JSON.createObjectNode();
        root.put("quant_method", "modelopt");
        root.put("quant_algo", format.modelopt().quantAlgo());
        ArrayNode ignore = root.putArray("ignore");
        excluded.stream().sorted().forEach(ignore::add);
        if (format.quantizesActivations()) {
            ObjectNode group = root.putObject("config_groups").putObject("group_0");
            ObjectNode weights = group.putObject("weights").put("dynamic", false).put("num_bits", format.elementBits()).put("type", "float");
            ObjectNode inputs = group.putObject("input_activations").put("dynamic", !staticInputScales)
                    .put("num_bits", format.elementBits()).put("type", "float");
            if (format.blockSize() > 0) {
                weights.put("group_size", format.blockSize());
                inputs.put("group_size", format.blockSize());
            }
            group.putArray("targets").add("Linear");
        }
        root.set("producer", producer(version));
        return root;
    }
}
