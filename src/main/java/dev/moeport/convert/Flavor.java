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
    MODELOPT("modelopt", ".weight", ".weight_scale", ".weight_scale_2", ".input_scale"),
    /**
     * transformers' own fine-grained FP8, the layout DeepSeek-V3 and Qwen3's FP8 checkpoints are published in: an
     * E4M3 {@code weight} and its f32 {@code weight_scale_inv}, one per 128 x 128 block, the value being the E4M3
     * value times its block's scale (fp8_pb's numerics under another name), and {@code quant_method: fp8}.
     */
    TRANSFORMERS("transformers", ".weight", ".weight_scale_inv", null, null),
    /**
     * llm-compressor's compressed-tensors. NVFP4 as {@code nvfp4-pack-quantized}: Model Optimizer's bytes under the names
     * compressed-tensors' own converter from Model Optimizer gives them (vllm-project/compressed-tensors,
     * src/compressed_tensors/entrypoints/convert/converters/modelopt_nvfp4.py): {@code weight} becomes
     * {@code weight_packed}, {@code weight_scale} stays, and the per-tensor {@code weight_scale_2} and
     * {@code input_scale} become their reciprocals {@code weight_global_scale} and {@code input_global_scale}.
     * FP8 per tensor as {@code float-quantized}: {@code weight}, {@code weight_scale} and {@code input_scale} as Model
     * Optimizer's (the same amax / 448 scales).
     */
    COMPRESSED_TENSORS("compressed-tensors", ".weight_packed", ".weight_scale", ".weight_global_scale", ".input_global_scale");

    private final String cliName;
    private final String weightSuffix;
    private final String scaleSuffix;
    private final String scale2Suffix;
    private final String inputScaleSuffix;

    Flavor(String cliName, String weightSuffix, String scaleSuffix, String scale2Suffix, String inputScaleSuffix) {
        this.cliName = cliName;
        this.weightSuffix = weightSuffix;
        this.scaleSuffix = scaleSuffix;
        this.scale2Suffix = scale2Suffix;
        this.inputScaleSuffix = inputScaleSuffix;
    }

    /** compressed-tensors' NVFP4 packs and inverts; its FP8 keeps Model Optimizer's names and scales. */
    private boolean packedNvfp4(QuantFormat format) {
        return this == COMPRESSED_TENSORS && format == QuantFormat.NVFP4;
    }

    /** The name of a module's quantized weight. */
    public String weightName(String module, QuantFormat format) {
        return module + (this == COMPRESSED_TENSORS && !packedNvfp4(format) ? ".weight" : weightSuffix);
    }

    /** The name of a module's second-level (per-tensor) weight scale. */
    public String scale2Name(String module) {
        return module + scale2Suffix;
    }

    /** The name of a module's static input scale. */
    public String inputScaleName(String module, QuantFormat format) {
        return module + (this == COMPRESSED_TENSORS && !packedNvfp4(format) ? ".input_scale" : inputScaleSuffix);
    }

    /** Whether per-tensor scales are stored as their reciprocals (compressed-tensors' NVFP4 global scales). */
    public boolean reciprocalTensorScales(QuantFormat format) {
        return packedNvfp4(format);
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
        throw new IllegalArgumentException("--flavor must be modelopt, transformers or compressed-tensors");
    }

    /** Refuses a format this flavor cannot describe, in one line. */
    public void requireSupports(QuantFormat format) {
        if (this == COMPRESSED_TENSORS && format != QuantFormat.NVFP4 && format != QuantFormat.FP8) {
            throw new MoeportException("--flavor compressed-tensors writes nvfp4 (nvfp4-pack-quantized) and fp8 (float-quantized) so far; for "
                    + format.cliName() + " use --flavor modelopt, which vLLM and SGLang load too");
        }
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
            throw new MoeportException("--flavor " + cliName + " describes the quantization in config.json, and the input has none");
        }
        if (this == COMPRESSED_TENSORS) {
            modelConfig.set("quantization_config", compressedTensorsConfig(format, planned));
            Map<String, JsonNode> files = new LinkedHashMap<>();
            files.put(dev.moeport.arch.ModelConfig.FILE_NAME, modelConfig);
            return files;
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

    /**
     * compressed-tensors' {@code quantization_config}: one config group of its preset targeting {@code Linear}
     * (src/compressed_tensors/quantization/quant_scheme.py: {@code NVFP4}, 4-bit float weights and inputs in
     * {@code tensor_group}s of 16, inputs dynamic {@code local}; {@code FP8}, 8-bit float per tensor, inputs static, or
     * {@code FP8_DYNAMIC}'s per-token dynamic inputs when no input scale was calibrated), status {@code compressed}, and
     * every linear left in high precision in {@code ignore}, as the Model Optimizer converter's {@code create_config}.
     */
    private static ObjectNode compressedTensorsConfig(QuantFormat format, OutputPlanner.Planned planned) {
        boolean nvfp4 = format == QuantFormat.NVFP4;
        String compression = nvfp4 ? "nvfp4-pack-quantized" : "float-quantized";
        ObjectNode q = com.fasterxml.jackson.databind.node.JsonNodeFactory.instance.objectNode();
        ObjectNode group = q.putObject("config_groups").putObject("config_group_0");
        group.put("format", compression);
        boolean staticInputs = planned.inputScales() > 0;
        group.set("input_activations", nvfp4 ? floatArgs(4, "tensor_group", "local", true)
                : floatArgs(8, staticInputs ? "tensor" : "token", staticInputs ? null : "true", true));
        group.putNull("output_activations");
        group.putArray("targets").add("Linear");
        group.set("weights", floatArgs(nvfp4 ? 4 : 8, nvfp4 ? "tensor_group" : "tensor", null, false));
        q.put("format", compression);
        ArrayNode ignore = q.putArray("ignore");
        planned.unquantizedModules().stream().sorted().forEach(ignore::add);
        q.putNull("kv_cache_scheme");
        q.put("quant_method", "compressed-tensors");
        q.put("quantization_status", "compressed");
        return q;
    }

    /** Quantization arguments of a float format; {@code dynamic}: null for static, "true" or "local". */
    private static ObjectNode floatArgs(int bits, String strategy, String dynamic, boolean inputs) {
        ObjectNode a = com.fasterxml.jackson.databind.node.JsonNodeFactory.instance.objectNode();
        if (dynamic == null) {
            a.put("dynamic", false);
        } else if (dynamic.equals("true")) {
            a.put("dynamic", true);
        } else {
            a.put("dynamic", dynamic);
        }
        if (strategy.equals("tensor_group")) {
            a.put("group_size", 16);
        }
        a.put("num_bits", bits);
        if (inputs && dynamic == null || inputs && bits == 4) {
            a.put("observer", "static_minmax");
        }
        a.put("strategy", strategy);
        a.put("symmetric", true);
        a.put("type", "float");
        return a;
    }
}
