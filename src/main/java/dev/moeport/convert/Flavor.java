package dev.moeport.convert;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.moeport.MoeportException;
import dev.moeport.quant.QuantFormat;
import java.util.LinkedHashMap;
import java.util.Locale;
import java.util.Map;

/**
 * How a quantized checkpoint describes itself to the program that loads it: the scale tensors' names and the
 * configuration files. The bytes of the weights and scales are the format's, whatever the flavor.
 */
public enum Flavor {
    /** Model Optimizer's: {@code weight_scale}, {@code hf_quant_config.json} and {@code quant_method: modelopt} (vLLM, SGLang, TensorRT-LLM). */
    MODELOPT("modelopt", ".weight_scale"),
    /**
     * transformers' own fine-grained FP8, the layout DeepSeek-V3 and Qwen3's FP8 checkpoints are published in: an
     * E4M3 {@code weight} and its f32 {@code weight_scale_inv}, one per 128 x 128 block, the value being the E4M3
     * value times its block's scale (fp8_pb's numerics under another name), and {@code quant_method: fp8}.
     */
    TRANSFORMERS("transformers", ".weight_scale_inv");

    private final String cliName;
    private final String scaleSuffix;

    Flavor(String cliName, String scaleSuffix) {
        this.cliName = cliName;
        this.scaleSuffix = scaleSuffix;
    }

    public String cliName() {
        return cliName;
    }

    /** The name of a module's (first) scale tensor: {@code <module>.weight_scale} or {@code .weight_scale_inv}. */
    public String scaleName(String module) {
        return module + scaleSuffix;
    }

    public static Flavor of(String name) {
        for (Flavor f : values()) {
            if (f.cliName.equals(name.toLowerCase(Locale.ROOT))) {
                return f;
            }
        }
        throw new IllegalArgumentException("--flavor must be modelopt or transformers");
    }

    /** Refuses a format this flavor cannot describe, in one line. */
    public void requireSupports(QuantFormat format) {
        if (this == TRANSFORMERS && format != QuantFormat.FP8_PB) {
            throw new MoeportException("--flavor transformers writes fp8_pb (transformers' fine-grained FP8, DeepSeek-V3's published layout);"
                    + " transformers 5.17 cannot load " + format.cliName() + " as moeport writes it: use --flavor modelopt for vLLM, SGLang or TensorRT-LLM");
        }
    }

    /** The JSON files that describe the quantization, by name, given the model's {@code config.json} (or null). */
    public Map<String, JsonNode> files(QuantFormat format, ObjectNode modelConfig, OutputPlanner.Planned planned, String version) {
        if (this == MODELOPT) {
            return QuantConfig.files(format, modelConfig, planned, version);
        }
        if (modelConfig == null) {
            throw new MoeportException("--flavor transformers describes the quantization in config.json, and the input has none");
        }
        ObjectNode q = modelConfig.putObject("quantization_config");
        q.put("quant_method", "fp8");
        q.put("fmt", "e4m3");
        q.put("activation_scheme", "dynamic");
        q.putArray("weight_block_size").add(format.rowGranularity()).add(format.blockSize());
        // Every linear left in high precision, so that transformers does not make it an FP8 layer.
        ArrayNode keep = q.putArray("modules_to_not_convert");
        planned.unquantizedModules().stream().sorted().forEach(keep::add);
        Map<String, JsonNode> files = new LinkedHashMap<>();
        files.put(dev.moeport.arch.ModelConfig.FILE_NAME, modelConfig);
        return files;
    }
}
