package dev.moeport.convert;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.JsonNodeFactory;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.moeport.MoeportException;
import dev.moeport.quant.QuantFormat;
import dev.moeport.tensor.Shape;
import java.util.Collection;
import java.util.List;

/**
 * Everything compressed-tensors (vllm-project/compressed-tensors 0.18.0, what llm-compressor saves) says about a
 * format moeport writes in that flavor, one row per format: the compression format, the tensor names, the shape of
 * {@code weight_scale}, and the preset scheme of quantization/quant_scheme.py whose config group describes it. The
 * bytes are Model Optimizer's (QUANT_FORMATS.md), as compressed-tensors' own converter from Model Optimizer keeps
 * them (entrypoints/convert/converters/modelopt_nvfp4.py): only NVFP4's per-tensor scales are inverted.
 *
 * @param weightSuffix the quantized weight: {@code .weight_packed} for the packed 4-bit formats
 * @param globalScaleSuffix the per-tensor weight scale beside the block scales (NVFP4's reciprocal), or null
 * @param inputScaleSuffix the static input scale written when calibrated, or null where the inputs are dynamic
 * @param weights the weights' QuantizationArgs of the preset (only the fields that differ from the defaults)
 * @param staticInputs the input activations' QuantizationArgs when an input scale was calibrated (null: none)
 * @param dynamicInputs the input activations' QuantizationArgs otherwise (null: the weights alone)
 */
public record CompressedTensorsScheme(QuantFormat format, String compression, String weightSuffix, String globalScaleSuffix,
                                      String inputScaleSuffix, boolean channelScaleColumn, Args weights, Args staticInputs,
                                      Args dynamicInputs) {
    /** The compressed-tensors release whose layout and defaults these rows follow. */
    public static final String VERSION = "0.18.0";
    private static final JsonNodeFactory JSON = JsonNodeFactory.instance;

    /**
     * The fields of a QuantizationArgs that differ from pydantic's defaults (quantization/quant_args.py,
     * {@code QuantizationArgs}); {@link #dump} writes the rest as its validator and serializers leave them.
     *
     * @param dynamic "false", "true" or "local"
     * @param groupSize 0 for none
     * @param block the block structure's side (0 for none)
     * @param scaleDtype torch's name of the scale dtype, or null
     * @param observer the observer given to the preset, or null for the validator's default
     */
    public record Args(int numBits, String strategy, String dynamic, int groupSize, int block, String scaleDtype, String observer) {

        /**
         * The dump of the validated QuantizationArgs (sorted keys, as ModelCompressor.update_config writes them): the
         * validator's observer ({@code memoryless_minmax} when static, none when dynamic, {@code minmax} when local and
         * none was given) and {@code zp_dtype} null (its serializer drops it when symmetric).
         */
        ObjectNode dump() {
            ObjectNode a = JSON.objectNode();
            a.put("actorder", (String) null);
            if (block > 0) {
                a.putArray("block_structure").add(block).add(block);
            } else {
                a.putNull("block_structure");
            }
            switch (dynamic) {
                case "true" -> a.put("dynamic", true);
                case "false" -> a.put("dynamic", false);
                default -> a.put("dynamic", dynamic);
            }
            if (groupSize > 0) {
                a.put("group_size", groupSize);
            } else {
                a.putNull("group_size");
            }
            a.put("num_bits", numBits);
            String validated = dynamic.equals("true") ? null : observer != null ? observer : dynamic.equals("local") ? "minmax" : "memoryless_minmax";
            a.put("observer", validated);
            a.putObject("observer_kwargs");
            a.put("scale_dtype", scaleDtype);
            a.put("strategy", strategy);
            a.put("symmetric", true);
            a.put("type", "float");
            a.putNull("zp_dtype");
            return a;
        }

        /** Whether a config group's QuantizationArgs are these (the fields that tell formats apart). */
        boolean describes(JsonNode a) {
            return a.path("num_bits").asInt() == numBits && a.path("type").asText().equals("float")
                    && a.path("strategy").asText().equals(strategy) && a.path("group_size").asInt(0) == groupSize
                    && (block == 0 || a.path("block_structure").path(1).asInt() == block);
        }
    }

    private static final String E4M3 = "torch.float8_e4m3fn";
    private static final String UINT8 = "torch.uint8";
    /** FP8_DYNAMIC's inputs: FP8 per token, dynamic (quant_scheme.py). */
    private static final Args PER_TOKEN = new Args(8, "token", "true", 0, 0, null, null);

    /** One row per format the flavor writes; the formats missing here have no compressed-tensors form moeport writes. */
    public static final List<CompressedTensorsScheme> ROWS = List.of(
            // FP8 preset (static per-tensor inputs, observer static_minmax), or FP8_DYNAMIC's per-token inputs when none was calibrated.
            new CompressedTensorsScheme(QuantFormat.FP8, "float-quantized", ".weight", null, ".input_scale", false,
                    new Args(8, "tensor", "false", 0, 0, null, null), new Args(8, "tensor", "false", 0, 0, null, "static_minmax"), PER_TOKEN),
            // FP8_DYNAMIC: per-channel weights, weight_scale [out, 1] (lifecycle/initialize.py, the channel strategy).
            new CompressedTensorsScheme(QuantFormat.FP8_PC, "float-quantized", ".weight", null, null, true,
                    new Args(8, "channel", "false", 0, 0, null, null), null, PER_TOKEN),
            // FP8_BLOCK: 128 x 128 weight blocks, weight_scale [ceil(out/128), ceil(in/128)]; inputs per group of 128, dynamic.
            new CompressedTensorsScheme(QuantFormat.FP8_PB, "float-quantized", ".weight", null, null, false,
                    new Args(8, "block", "false", 0, 128, null, null), null, new Args(8, "group", "true", 128, 0, null, null)),
            // NVFP4: E4M3 block scales, a global scale per tensor (the reciprocal of Model Optimizer's), inputs locally dynamic
            // under their calibrated input_global_scale; without one, NVFP4A16's weights alone (vLLM's W4A4 scheme reads it).
            new CompressedTensorsScheme(QuantFormat.NVFP4, "nvfp4-pack-quantized", ".weight_packed", ".weight_global_scale", ".input_global_scale",
                    false, new Args(4, "tensor_group", "false", 16, 0, E4M3, null), new Args(4, "tensor_group", "local", 16, 0, E4M3, "static_minmax"),
                    null),
            // MXFP4: E8M0 (uint8) scales per 32, no global scale, inputs MXFP4 dynamic as Model Optimizer's MXFP4 recipe quantizes them.
            new CompressedTensorsScheme(QuantFormat.MXFP4, "mxfp4-pack-quantized", ".weight_packed", null, null, false,
                    new Args(4, "group", "false", 32, 0, UINT8, null), null, new Args(4, "group", "true", 32, 0, UINT8, null)));

    /** The row of {@code format}, or a one-line refusal naming the formats that have one. */
    public static CompressedTensorsScheme of(QuantFormat format) {
        return ROWS.stream().filter(r -> r.format == format).findFirst().orElseThrow(() -> new MoeportException(
                "--flavor compressed-tensors has no form for " + format.cliName() + " (it writes "
                        + String.join(", ", ROWS.stream().map(r -> r.format.cliName()).toList())
                        + "); use --flavor modelopt, which vLLM and SGLang load too"));
    }

    public static boolean supports(QuantFormat format) {
        return ROWS.stream().anyMatch(r -> r.format == format);
    }

    /** The shape of {@code weight_scale} for a weight of shape {@code w}: Model Optimizer's, with channel scales as a column. */
    public Shape scaleShape(Shape w) {
        Shape s = format.scaleShape(w);
        return channelScaleColumn ? s.append(1) : s;
    }

    /** The config group of this format: its preset's QuantizationScheme as pydantic dumps it, targeting {@code targets}. */
    public ObjectNode configGroup(boolean calibratedInputs, Collection<String> targets) {
        ObjectNode g = JSON.objectNode();
        g.put("format", compression);
        Args inputs = calibratedInputs && staticInputs != null ? staticInputs : dynamicInputs;
        g.set("input_activations", inputs == null ? JSON.nullNode() : inputs.dump());
        g.putNull("output_activations");
        ArrayNode t = g.putArray("targets");
        targets.forEach(t::add);
        g.set("weights", weights.dump());
        return g;
    }

    /**
     * {@code quantization_config} as ModelCompressor.update_config writes it (compressors/model_compressors/
     * model_compressor.py): the QuantizationConfig's dump with sorted keys, plus {@code version},
     * {@code sparsity_config} and {@code transform_config}. {@code groups} are the config groups, named
     * {@code group_<i>} as QuantizationConfig.from_pretrained names them; {@code format} is {@code mixed-precision}
     * when they differ.
     */
    public static ObjectNode quantizationConfig(List<ObjectNode> groups, Collection<String> ignore) {
        ObjectNode q = JSON.objectNode();
        ObjectNode named = q.putObject("config_groups");
        for (int i = 0; i < groups.size(); i++) {
            named.set("group_" + i, groups.get(i));
        }
        List<String> formats = groups.stream().map(g -> g.get("format").asText()).distinct().toList();
        q.put("format", formats.size() == 1 ? formats.getFirst() : "mixed-precision");
        q.putNull("global_compression_ratio");
        ArrayNode list = q.putArray("ignore");
        ignore.forEach(list::add);
        q.putNull("kv_cache_scheme");
        q.put("quant_method", "compressed-tensors");
        q.put("quantization_status", "compressed");
        q.putObject("sparsity_config");
        q.putObject("transform_config");
        q.put("version", VERSION);
        return q;
    }

    /** The format a config group describes, or a one-line refusal naming the file. */
    public static QuantFormat formatOf(JsonNode group, String where) {
        JsonNode w = group.path("weights");
        for (CompressedTensorsScheme r : ROWS) {
            if (r.compression.equals(group.path("format").asText(r.compression)) && r.weights.describes(w)) {
                return r.format;
            }
        }
        throw new MoeportException(where + ": compressed-tensors config group with weights " + w + " is not a format moeport reads"
                + " (it reads " + String.join(", ", ROWS.stream().map(r -> r.format.cliName()).toList()) + ")");
    }
}
