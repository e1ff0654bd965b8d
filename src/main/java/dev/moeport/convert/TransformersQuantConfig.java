package dev.moeport.convert;

import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.JsonNodeFactory;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.moeport.MoeportException;
import dev.moeport.quant.QuantFormat;

/**
 * What transformers 5.17 loads of moeport's formats, and the {@code quantization_config} that tells it so. Read in its
 * source (quantizers/auto.py, quantizer_finegrained_fp8.py, quantizer_mxfp4.py, quantizer_nvfp4.py, utils/quantization_config.py):
 * <ul>
 *   <li>fp8_pb: {@code fp8}, FineGrainedFP8Config, {@code weight_scale_inv} f32 per {@code weight_block_size} block.
 *   <li>mxfp8: {@code mxfp8}, the same config and quantizer; its dequantization reads uint8 {@code weight_scale_inv}
 *       as E8M0 exponents of blocks of {@code [1, 32]}.
 *   <li>mxfp4: {@code mxfp4}, GPT-OSS's experts alone ({@link GptOssMxfp4}).
 * </ul>
 */
final class TransformersQuantConfig {
    private TransformersQuantConfig() {}

    /** Refuses, in one line, a format transformers 5.17 cannot load. */
    static void requireLoadable(QuantFormat format) {
        String why = switch (format) {
            case FP8_PB, MXFP8, MXFP4 -> null;
            case NVFP4 -> "transformers 5.17's nvfp4 method only quantizes BF16 weights as it loads them (Blackwell GPUs) and refuses"
                    + " pre-quantized checkpoints (quantizer_nvfp4.py)";
            default -> "transformers 5.17 has no quantization method that reads it (it loads fp8_pb as fp8, mxfp8, and mxfp4 as GPT-OSS's experts)";
        };
        if (why != null) {
            throw new MoeportException("--flavor transformers cannot write " + format.cliName() + ": " + why
                    + "; use --flavor modelopt for vLLM, SGLang or TensorRT-LLM");
        }
    }

    /**
     * Refuses, in one line, a weight whose blocks transformers would decode wrongly: its FP8 dequantization (on CPU,
     * and wherever its Hub kernels are missing) takes the block as {@code rows // scale_rows} and {@code cols // scale_cols}
     * (integrations/finegrained_fp8.py, {@code Fp8Dequantize._dequantize_one}), which is the block only where the block
     * divides the dimension or the dimension fits in one block (192 rows: blocks of 96; 584: refused).
     */
    static void requireWholeBlocks(String tensor, QuantFormat format, dev.moeport.tensor.Shape shape) {
        long rows = shape.dim(-2);
        long cols = shape.dim(-1);
        int blockRows = format.rowGranularity();
        int blockCols = format.blockSize();
        if (rows > blockRows && rows % blockRows != 0 || cols > blockCols && cols % blockCols != 0) {
            throw new MoeportException("tensor '" + tensor + "' is " + rows + " x " + cols + ", not whole " + format.cliName() + " blocks of "
                    + blockRows + " x " + blockCols + ": transformers' dequantization would decode it with wrong blocks or refuse it"
                    + " (keep it unquantized with --exclude)");
        }
    }

    /** The {@code quantization_config} of a model quantized to {@code format}, with every linear left in BF16 listed as such. */
    static ObjectNode of(QuantFormat format, ObjectNode modelConfig, OutputPlanner.Planned planned) {
        ObjectNode q = JsonNodeFactory.instance.objectNode();
        if (format == QuantFormat.MXFP4) {
            String modelType = modelConfig.path("model_type").asText();
            if (!modelType.equals("gpt_oss")) {
                throw new MoeportException("--flavor transformers writes mxfp4 for GPT-OSS alone (transformers 5.17's mxfp4 method converts"
                        + " GptOssExperts only), and this model_type is '" + modelType + "': use --flavor modelopt");
            }
            q.put("quant_method", "mxfp4");
        } else {
            q.put("quant_method", format == QuantFormat.MXFP8 ? "mxfp8" : "fp8");
            q.put("fmt", "e4m3");
            q.put("activation_scheme", "dynamic");
            q.putArray("weight_block_size").add(format.rowGranularity()).add(format.blockSize());
        }
        // So that transformers does not make a module kept in high precision a quantized one.
        ArrayNode keep = q.putArray("modules_to_not_convert");
        planned.unquantizedModules().stream().sorted().forEach(keep::add);
        return q;
    }
}
