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
        if (modelConfig != null) {
            modelConfig.set("quantization_config", quantizationConfig(format, planned.unquantizedModules(), planned.staticInputScales(), version));
            files.put(dev.moeport.arch.ModelConfig.FILE_NAME, modelConfig);
        }
        files.put(HfOutputFolder.QUANT_CONFIG, hfQuantConfig(format, planned.unquantizedModules(), version));
        return files;
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
