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

    /** ModelOpt's {@code quant_algo} for a format, with its exact casing. */
    public static String quantAlgo(QuantFormat format) {
        return switch (format) {
            case FP8 -> "FP8";
            case FP8_PC -> "FP8_PER_CHANNEL_PER_TOKEN";
            case FP8_PB -> "fp8_pb_wo";
            case NVFP4 -> "NVFP4";
            case MXFP4 -> "mxfp4";
            case MXFP8 -> "MXFP8";
            case INT8_WO -> "W8A16";
            case INT4_G128 -> "W4A16_AWQ";
        };
    }

    /** The {@code group_size} ModelOpt records, or 0 when it records none. */
    private static int groupSize(QuantFormat format) {
        return switch (format) {
            case NVFP4 -> 16;
            case MXFP8 -> 32;
            case INT4_G128 -> 128;
            default -> 0;
        };
    }

    private static ObjectNode producer(String version) {
        return JSON.createObjectNode().put("name", "moeport").put("version", version);
    }

    /** {@code hf_quant_config.json}. */
    public static ObjectNode hfQuantConfig(QuantFormat format, List<String> excluded, String version) {
        ObjectNode root = JSON.createObjectNode();
        root.set("producer", producer(version));
        ObjectNode q = root.putObject("quantization");
        q.put("quant_algo", quantAlgo(format));
        q.putNull("kv_cache_quant_algo");
        if (groupSize(format) > 0) {
            q.put("group_size", groupSize(format));
        }
        if (format == QuantFormat.INT4_G128) {
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

    /** {@code quantization_config} for {@code config.json}; {@code config_groups} for the formats ModelOpt describes so (fp8, nvfp4). */
    public static ObjectNode quantizationConfig(QuantFormat format, List<String> excluded, boolean staticInputScales, String version) {
        ObjectNode root = JSON.createObjectNode();
        root.put("quant_method", "modelopt");
        root.put("quant_algo", quantAlgo(format));
        ArrayNode ignore = root.putArray("ignore");
        excluded.stream().sorted().forEach(ignore::add);
        if (format == QuantFormat.FP8 || format == QuantFormat.NVFP4) {
            ObjectNode group = root.putObject("config_groups").putObject("group_0");
            ObjectNode weights = group.putObject("weights").put("dynamic", false).put("num_bits", format == QuantFormat.FP8 ? 8 : 4).put("type", "float");
            if (format == QuantFormat.NVFP4) {
                weights.put("group_size", 16);
            }
            ObjectNode inputs = group.putObject("input_activations").put("dynamic", !staticInputScales)
                    .put("num_bits", format == QuantFormat.FP8 ? 8 : 4).put("type", "float");
            if (format == QuantFormat.NVFP4) {
                inputs.put("group_size", 16);
            }
            group.putArray("targets").add("Linear");
        }
        root.set("producer", producer(version));
        return root;
    }
}
