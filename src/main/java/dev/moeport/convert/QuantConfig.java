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

    /** {@code hf_quant_config.json} of one layer description {@code layer} (see {@link #layerConfig}). */
    private static ObjectNode hfQuantConfig(ObjectNode layer, List<String> excluded, String version) {
        ObjectNode root = JSON.createObjectNode();
        root.set("producer", producer(version));
        ObjectNode q = root.putObject("quantization");
        q.set("quant_algo", layer.get("quant_algo"));
        q.putNull("kv_cache_quant_algo");
        layer.properties().stream().skip(1).forEach(e -> q.set(e.getKey(), e.getValue()));
        ArrayNode list = q.putArray("exclude_modules");
        excluded.stream().sorted().forEach(list::add);
        return root;
    }

    /**
     * One layer's description, as Model Optimizer's process_layer_quant_config (quant_utils.py) writes it into a
     * single format's {@code quantization} and into MIXED_PRECISION's {@code quantized_layers}: {@code quant_algo},
     * {@code group_size} where the format has one, and the AWQ fields (moeport writes no pre-quant scale).
     */
    private static ObjectNode layerConfig(QuantFormat format, boolean inputScale) {
        QuantFormat.Modelopt names = format.modelopt();
        boolean weightOnly = format.quantizesActivations() && !inputScale && WEIGHT_ONLY_ALGOS.containsKey(format);
        ObjectNode layer = JSON.createObjectNode().put("quant_algo", weightOnly ? WEIGHT_ONLY_ALGOS.get(format) : names.quantAlgo());
        if (names.groupSize() > 0) {
            layer.put("group_size", names.groupSize());
        }
        if (names.awq()) {
            layer.put("has_zero_point", false);
            layer.put("pre_quant_scale", false);
        }
        return layer;
    }

    /**
     * Model Optimizer's quant_algo for a format's weights when its activations are not quantized, which is what a
     * module without a calibrated input scale is: NVFP4's W4A16_NVFP4 (quant_utils.py get_quantization_format: NVFP4
     * weights with the input quantizer disabled), the same weight bytes. vLLM's NVFP4 method reads a static
     * input_scale for every module, and one missing is never set.
     */
    private static final java.util.Map<QuantFormat, String> WEIGHT_ONLY_ALGOS = java.util.Map.of(QuantFormat.NVFP4, "W4A16_NVFP4");

    /** The format of Model Optimizer's {@code quant_algo} (any casing, W4A16_NVFP4 included), or null. */
    public static QuantFormat formatOfAlgo(String algo) {
        return WEIGHT_ONLY_ALGOS.entrySet().stream().filter(e -> e.getValue().equalsIgnoreCase(algo)).map(java.util.Map.Entry::getKey)
                .findFirst().orElseGet(() -> QuantFormat.fromModeloptAlgo(algo));
    }

    /** Each quantized module's layer description, in order. */
    private static java.util.SequencedMap<String, ObjectNode> layers(OutputPlanner.Planned planned) {
        java.util.SequencedMap<String, ObjectNode> layers = new java.util.LinkedHashMap<>();
        planned.formats().forEach((module, format) -> layers.put(module, layerConfig(format, planned.withInputScale().contains(module))));
        return layers;
    }

    /**
     * MIXED_PRECISION's {@code hf_quant_config.json}, as Model Optimizer 0.47 writes it (quant_utils.py,
     * process_layer_quant_config, more than one format): {@code quant_algo}, {@code kv_cache_quant_algo} and every
     * quantized module's own description under {@code quantized_layers}; no exclusion list (a layer not listed stays
     * unquantized).
     */
    private static ObjectNode mixedHfQuantConfig(java.util.SequencedMap<String, ObjectNode> layers, String version) {
        ObjectNode root = JSON.createObjectNode();
        root.set("producer", producer(version));
        ObjectNode q = root.putObject("quantization");
        q.put("quant_algo", MIXED_PRECISION);
        q.putNull("kv_cache_quant_algo");
        layers.forEach(q.putObject("quantized_layers")::set);
        return root;
    }

    /** Model Optimizer's quant_algo of a checkpoint whose modules have several formats. */
    public static final String MIXED_PRECISION = "MIXED_PRECISION";

    /**
     * MIXED_PRECISION's {@code quantization_config}, as Model Optimizer's convert_hf_config.py writes it: one config
     * group per layer description, in the order first met, targeting its modules sorted, with
     * {@code _quant_algo_to_group_config}'s arguments (a quant_algo it has none for gets only its name), the
     * {@code quantized_layers}, an empty {@code ignore} (MIXED_PRECISION lists no exclusions) and the quant_algo.
     */
    private static ObjectNode mixedQuantizationConfig(java.util.SequencedMap<String, ObjectNode> layers, String version) {
        ObjectNode root = JSON.createObjectNode();
        ObjectNode groups = root.putObject("config_groups");
        List<ObjectNode> descriptions = layers.values().stream().distinct().toList();
        for (int i = 0; i < descriptions.size(); i++) {
            ObjectNode description = descriptions.get(i);
            ObjectNode group = groupArguments(description);
            ArrayNode targets = group.putArray("targets");
            layers.entrySet().stream().filter(e -> e.getValue().equals(description)).map(java.util.Map.Entry::getKey).sorted().forEach(targets::add);
            groups.set("group_" + i, group);
        }
        layers.forEach(root.putObject("quantized_layers")::set);
        root.putArray("ignore");
        root.put("quant_algo", MIXED_PRECISION);
        root.set("producer", producer(version));
        root.put("quant_method", "modelopt");
        return root;
    }

    /** Float weights and inputs of {@code bits}, in groups of {@code groupSize} (0: none), into {@code g}; returns the weights' arguments. */
    private static ObjectNode floatGroup(ObjectNode g, int bits, int groupSize) {
        ObjectNode inputs = g.putObject("input_activations").put("dynamic", false).put("num_bits", bits).put("type", "float");
        ObjectNode weights = g.putObject("weights").put("dynamic", false).put("num_bits", bits).put("type", "float");
        if (groupSize > 0) {
            inputs.put("group_size", groupSize);
            weights.put("group_size", groupSize);
        }
        return weights;
    }

    /** convert_hf_config.py's _quant_algo_to_group_config for a layer description. */
    private static ObjectNode groupArguments(ObjectNode description) {
        ObjectNode g = JSON.createObjectNode();
        String algo = description.get("quant_algo").asText();
        QuantFormat format = formatOfAlgo(algo);
        int groupSize = format.modelopt().groupSize();
        java.util.function.Function<Integer, ObjectNode> args = bits -> JSON.createObjectNode().put("dynamic", false).put("num_bits", bits);
        if (!algo.equals(format.modelopt().quantAlgo())) {
            // W4A16_NVFP4: the weights alone.
            g.set("weights", args.apply(format.elementBits()).put("type", "float").put("group_size", groupSize));
            return g;
        }
        switch (format) {
            case FP8, NVFP4, MXFP8 -> floatGroup(g, format.elementBits(), groupSize);
            case FP8_PC -> floatGroup(g, format.elementBits(), groupSize).put("strategy", "channel");
            case INT8_WO -> g.set("weights", args.apply(8).put("type", "int"));
            case INT4_G128 -> g.set("weights", args.apply(4).put("type", "int").put("group_size", groupSize));
            case FP8_PB, MXFP4 -> g.put("quant_algo", format.modelopt().quantAlgo());
        }
        return g;
    }

    /**
     * The JSON files of a quantized output: {@code hf_quant_config.json}, and {@code config.json} (when
     * there is one to start from) with its {@code quantization_config}.
     */
    public static java.util.Map<String, com.fasterxml.jackson.databind.JsonNode> files(QuantFormat format, ObjectNode modelConfig,
                                                                                     OutputPlanner.Planned planned, String version) {
        java.util.Map<String, com.fasterxml.jackson.databind.JsonNode> files = new java.util.LinkedHashMap<>();
        java.util.SequencedMap<String, ObjectNode> layers = layers(planned);
        List<ObjectNode> descriptions = layers.values().stream().distinct().toList();
        if (descriptions.size() > 1) {
            if (modelConfig != null) {
                modelConfig.set("quantization_config", mixedQuantizationConfig(layers, version));
                files.put(dev.moeport.arch.ModelConfig.FILE_NAME, modelConfig);
            }
            files.put(HfOutputFolder.QUANT_CONFIG, mixedHfQuantConfig(layers, version));
            return files;
        }
        ObjectNode layer = descriptions.isEmpty() ? layerConfig(format, false) : descriptions.getFirst();
        List<String> excluded = excludeModules(planned.unquantizedModules(), planned.quantizedModules());
        if (modelConfig != null) {
            modelConfig.set("quantization_config", quantizationConfig(format, layer, excluded, planned.staticInputScales(), version));
            files.put(dev.moeport.arch.ModelConfig.FILE_NAME, modelConfig);
        }
        files.put(HfOutputFolder.QUANT_CONFIG, hfQuantConfig(layer, excluded, version));
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
    private static ObjectNode quantizationConfig(QuantFormat format, ObjectNode layer, List<String> excluded, boolean staticInputScales,
                                                 String version) {
        ObjectNode root = JSON.createObjectNode();
        root.put("quant_method", "modelopt");
        root.set("quant_algo", layer.get("quant_algo"));
        ArrayNode ignore = root.putArray("ignore");
        excluded.stream().sorted().forEach(ignore::add);
        if (!layer.get("quant_algo").asText().equals(format.modelopt().quantAlgo())) {
            // W4A16_NVFP4: convert_hf_config.py's weights-only group.
            ObjectNode group = groupArguments(layer);
            group.putArray("targets").add("Linear");
            root.putObject("config_groups").set("group_0", group);
        } else if (format.quantizesActivations()) {
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
