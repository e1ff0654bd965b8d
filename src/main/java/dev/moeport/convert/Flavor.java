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
     * The layouts transformers' own quantization methods load ({@link TransformersQuantConfig}): fp8_pb as its
     * fine-grained FP8, the layout DeepSeek-V3 and Qwen3's FP8 checkpoints are published in (an E4M3 {@code weight} and
     * its f32 {@code weight_scale_inv}, one per 128 x 128 block, the value being the E4M3 value times its block's scale:
     * fp8_pb's numerics under another name); mxfp8 the same way with E8M0 exponents per 1 x 32; mxfp4 as GPT-OSS
     * publishes its experts ({@link GptOssMxfp4}).
     */
    TRANSFORMERS("transformers", ".weight", ".weight_scale_inv", null, null),
    /**
     * llm-compressor's compressed-tensors: Model Optimizer's bytes under compressed-tensors' names, with its
     * {@code quantization_config}; what each format is called and configured there is {@link CompressedTensorsScheme}'s table.
     */
    COMPRESSED_TENSORS("compressed-tensors", ".weight", ".weight_scale", null, ".input_scale");

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

    /** The name of a module's quantized weight. */
    public String weightName(String module, QuantFormat format) {
        return module + (this == COMPRESSED_TENSORS ? CompressedTensorsScheme.of(format).weightSuffix() : weightSuffix);
    }

    /** The name of a module's second-level (per-tensor) weight scale. */
    public String scale2Name(String module, QuantFormat format) {
        return module + (this == COMPRESSED_TENSORS ? CompressedTensorsScheme.of(format).globalScaleSuffix() : scale2Suffix);
    }

    /** The name of a module's static input scale. */
    public String inputScaleName(String module, QuantFormat format) {
        return module + (this == COMPRESSED_TENSORS ? CompressedTensorsScheme.of(format).inputScaleSuffix() : inputScaleSuffix);
    }

    /** The shape of a module's (first) scale tensor for a weight of shape {@code weight}. */
    public dev.moeport.tensor.Shape scaleShape(QuantFormat format, dev.moeport.tensor.Shape weight) {
        return switch (this) {
            case COMPRESSED_TENSORS -> CompressedTensorsScheme.of(format).scaleShape(weight);
            // Model Optimizer's export stores fp8_pb's grid as [rows, 1, cols, 1], the shape vLLM's ModelOpt FP8_PB_WO loader allocates.
            case MODELOPT -> format == QuantFormat.FP8_PB ? QuantizedCheckpoint.blockGrid(format.scaleShape(weight)) : format.scaleShape(weight);
            case TRANSFORMERS -> format.scaleShape(weight);
        };
    }

    /** Whether per-tensor scales are stored as their reciprocals (compressed-tensors' NVFP4 global scales). */
    public boolean reciprocalTensorScales(QuantFormat format) {
        return this == COMPRESSED_TENSORS && CompressedTensorsScheme.of(format).globalScaleSuffix() != null;
    }

    /**
     * Whether only experts stored fused (GPT-OSS's) are quantized, into {@link GptOssMxfp4}'s layout, and every linear
     * weight is kept: transformers' mxfp4 method converts GptOssExperts alone.
     */
    public boolean quantizesFusedExpertsOnly(QuantFormat format) {
        return this == TRANSFORMERS && format == QuantFormat.MXFP4;
    }

    /** Refuses, in one line, a weight this flavor's loader cannot decode in {@code format}. */
    public void requireQuantizable(String tensor, QuantFormat format, dev.moeport.tensor.Shape shape) {
        if (this == TRANSFORMERS) {
            TransformersQuantConfig.requireWholeBlocks(tensor, format, shape);
        }
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
        if (this == COMPRESSED_TENSORS) {
            CompressedTensorsScheme.of(format);
        }
        if (this == TRANSFORMERS) {
            TransformersQuantConfig.requireLoadable(format);
        }
    }

    /** Refuses, in one line, a recipe's formats this flavor cannot describe together. */
    public void requireSupports(java.util.List<QuantFormat> formats) {
        formats.forEach(this::requireSupports);
        if (this == TRANSFORMERS && (formats.size() > 1 || formats.contains(QuantFormat.MXFP4))) {
            throw new MoeportException("--flavor transformers takes a recipe of one format, fp8_pb or mxfp8: transformers 5.17 reads one"
                    + " quantization method per model, and its mxfp4 is GPT-OSS's experts alone (give --format mxfp4)");
        }
    }

    /**
     * The JSON files that describe the quantization, by name, given the model's {@code config.json} (or null).
     * {@code format} is null for a recipe's output: its formats are the planned ones.
     */
    public Map<String, JsonNode> files(QuantFormat format, ObjectNode modelConfig, OutputPlanner.Planned planned, String version) {
        if (format == null && !planned.usedFormats().isEmpty()) {
            return files(planned.usedFormats().getFirst(), modelConfig, planned, version);
        }
        if (this == MODELOPT) {
            return QuantConfig.files(format, modelConfig, planned, version);
        }
        if (modelConfig == null) {
            throw new MoeportException("--flavor " + cliName + " describes the quantization in config.json, and the input has none");
        }
        if (this == COMPRESSED_TENSORS) {
            // One format: one group targeting Linear. Several: a group per format targeting its modules by name.
            java.util.List<ObjectNode> groups = planned.mixed()
                    ? planned.usedFormats().stream().map(f -> CompressedTensorsScheme.of(f).configGroup(planned.staticInputScales(f),
                            planned.modulesOf(f).stream().sorted().toList())).toList()
                    : java.util.List.of(CompressedTensorsScheme.of(format).configGroup(planned.staticInputScales(), java.util.List.of("Linear")));
            modelConfig.set("quantization_config", CompressedTensorsScheme.quantizationConfig(groups,
                    planned.unquantizedModules().stream().sorted().toList()));
            Map<String, JsonNode> files = new LinkedHashMap<>();
            files.put(dev.moeport.arch.ModelConfig.FILE_NAME, modelConfig);
            return files;
        }
        modelConfig.set("quantization_config", TransformersQuantConfig.of(format, modelConfig, planned));
        Map<String, JsonNode> files = new LinkedHashMap<>();
        files.put(dev.moeport.arch.ModelConfig.FILE_NAME, modelConfig);
        return files;
    }
}
