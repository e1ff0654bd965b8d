package dev.moeport.convert;


import com.fasterxml.jackson.databind.ObjectMapper;
import dev.moeport.MoeportException;
import dev.moeport.io.IoErrors;
import dev.moeport.quant.DequantizedTensor;
import dev.moeport.quant.QuantFormat;
import dev.moeport.quant.QuantKernel;
import dev.moeport.tensor.DType;
import dev.moeport.tensor.ReshapedTensor;
import dev.moeport.tensor.Shape;
import dev.moeport.tensor.Tensor;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.SequencedMap;
import java.util.Set;
import java.util.function.Function;

/**
 * A quantized Hugging Face checkpoint read back: which modules are quantized, in which format, and
 * each seen as the floating-point weight it stands for ({@code moeport dequantize}, import, verify).
 */
public final class QuantizedCheckpoint {
    private static final ObjectMapper JSON = new ObjectMapper().enable(com.fasterxml.jackson.databind.DeserializationFeature.FAIL_ON_TRAILING_TOKENS);

    private QuantizedCheckpoint() {}

    /** The name of a tensor that only a quantized checkpoint holds (a scale of some format), or null. */
    public static String quantizedMarker(java.util.Collection<String> names) {
        return names.stream().filter(n -> n.endsWith(".weight_scale") || n.endsWith(".weight_scale_inv") || n.endsWith(GptOssMxfp4.BLOCKS)
                        || n.endsWith(PACKED))
                .findFirst().orElse(null);
    }

    /** The format a checkpoint folder's quantization config names, or null when it has none. */
    public static QuantFormat declaredFormat(Path folder) {
        if (folder == null || !Files.isDirectory(folder)) {
            return null;
        }
        try {
            String algo = null;
            Path hfQuant = folder.resolve(HfOutputFolder.QUANT_CONFIG);
            Path config = folder.resolve("config.json");
            if (Files.exists(hfQuant)) {
                algo = JSON.readTree(hfQuant.toFile()).at("/quantization/quant_algo").asText(null);
            } else if (Files.exists(config)) {
                com.fasterxml.jackson.databind.JsonNode q = JSON.readTree(config.toFile()).path("quantization_config");
                if (q.path("quant_method").asText().equals("compressed-tensors")) {
                    // One config group names the format; several (mixed precision) leave it to each module's tensors.
                    com.fasterxml.jackson.databind.JsonNode groups = q.path("config_groups");
                    return groups.size() == 1 ? CompressedTensorsScheme.formatOf(groups.elements().next(), config.toString()) : null;
                }
                algo = q.path("quant_algo").asText(null);
            }
            if (algo == null || algo.equals(QuantConfig.MIXED_PRECISION)) {
                // Mixed precision: each module's format is told by its tensors.
                return null;
            }
            QuantFormat format = QuantConfig.formatOfAlgo(algo);
            if (format == null) {
                throw new MoeportException(folder + ": quant_algo '" + algo + "' is not one moeport reads");
            }
            return format;
        } catch (IOException e) {
            throw new MoeportException(folder + ": cannot read the quantization config (" + IoErrors.why(e) + ")", e);
        }
    }

    /**
     * The format of one module, from the dtypes of its weight and scales and the shape of its scale, as each
     * format states them: among the formats of these dtypes (and a {@code weight_scale_2} where the format has
     * one), the one whose scale shape fits the weight, else the one whose scale has the rank of this scale (its
     * shape is then reported as not fitting), else the first.
     */
    public static QuantFormat inferFormat(Tensor weight, Tensor scale, boolean hasScale2) {
        List<QuantFormat> candidates = Arrays.stream(QuantFormat.values())
                .filter(f -> f.weightType() == weight.dtype() && f.scaleType() == scale.dtype() && (hasScale2 || !f.hasScale2()))
                .toList();
        if (candidates.isEmpty() || weight.rank() < 2) {
            throw new MoeportException(weight.where() + ": cannot tell its quantization format from " + weight.dtype() + " weight and "
                    + scale.dtype() + scale.shape() + " scale");
        }
        Function<QuantFormat, Shape> scaleShape = f -> f.scaleShape(f.decodedShape(weight.shape()));
        return candidates.stream().filter(f -> scaleShape.apply(f).equals(scale.shape())).findFirst()
                .or(() -> candidates.stream().filter(f -> isStoredFormOf(scale.shape(), scaleShape.apply(f))).findFirst())
                .or(() -> candidates.stream().filter(f -> scaleShape.apply(f).rank() == scale.rank()).findFirst())
                .orElse(candidates.getFirst());
    }

    /**
     * Whether a scale is stored as the format's scale with a trailing dimension of 1: compressed-tensors' channel
     * scales {@code [..., out, 1]}, and its per-tensor scales {@code [1]}.
     */
    public static boolean isColumnOf(Shape stored, Shape formatShape) {
        return stored.equals(formatShape.append(1));
    }

    /**
     * A 2-D block grid {@code [..., rows, cols]} as Model Optimizer's export stores it, {@code [..., rows, 1, cols, 1]}:
     * its block quantizer keeps the reduced dimensions of the {@code [rows, 128, cols, 128]} view of the weight
     * (modelopt/torch/quantization/nn/modules/tensor_quantizer.py, _setup_for_blockquant and _get_amax with
     * keepdims=True; export_amax leaves a block amax unsqueezed), and get_scaling_factor divides that amax as is.
     */
    public static Shape blockGrid(Shape grid) {
        long[] d = grid.toArray();
        long[] out = java.util.Arrays.copyOf(d, d.length + 2);
        out[d.length - 1] = 1;
        out[d.length] = d[d.length - 1];
        out[d.length + 1] = 1;
        return Shape.of(out);
    }

    /** Whether a stored scale is the format's scale as is, as a column ({@link #isColumnOf}) or as a block grid ({@link #blockGrid}). */
    public static boolean isStoredFormOf(Shape stored, Shape formatShape) {
        return stored.equals(formatShape) || isColumnOf(stored, formatShape) || formatShape.rank() >= 2 && stored.equals(blockGrid(formatShape));
    }

    /**
     * A checkpoint with its quantized modules decoded: each quantized {@code <module>.weight} is a
     * {@link DequantizedTensor}, its scales and {@code input_scale} are gone, everything else is as it was.
     */
    public record Decoded(SequencedMap<String, Tensor> tensors, List<String> modules, QuantFormat format) {}

    public static Decoded decode(Map<String, Tensor> tensors, QuantFormat declared, DType dtype, QuantKernel kernel) {
        SequencedMap<String, Tensor> out = new LinkedHashMap<>();
        List<String> modules = new ArrayList<>();
        Set<String> scales = new HashSet<>();
        QuantFormat seen = declared;
        for (Map.Entry<String, Tensor> e : tensors.entrySet()) {
            String name = e.getKey();
            Tensor weight = e.getValue();
            String module = name.endsWith(".weight") ? module(name) : null;
            if (module != null && tensors.containsKey(module + ".weight_scale_inv")) {
                Tensor scaleInv = tensors.get(module + ".weight_scale_inv");
                QuantFormat format = scaleInv.dtype() == DType.U8 ? QuantFormat.MXFP8 : QuantFormat.FP8_PB;
                out.put(name, fineGrainedFp8(format, weight, scaleInv, dtype, kernel));
                modules.add(module);
                scales.add(module + ".weight_scale_inv");
                seen = format;
                continue;
            }
            if (name.endsWith(PACKED)) {
                String packedModule = name.substring(0, name.length() - PACKED.length());
                boolean nvfp4 = tensors.containsKey(packedModule + GLOBAL_SCALE);
                out.put(packedModule + ".weight", nvfp4 ? compressedTensorsNvfp4(packedModule, tensors, dtype, kernel)
                        : compressedTensorsMxfp4(packedModule, tensors, dtype, kernel));
                modules.add(packedModule);
                scales.addAll(List.of(name, packedModule + ".weight_scale", packedModule + GLOBAL_SCALE, packedModule + ".input_global_scale"));
                seen = nvfp4 ? QuantFormat.NVFP4 : QuantFormat.MXFP4;
                continue;
            }
            if (name.endsWith(GptOssMxfp4.BLOCKS) && tensors.containsKey(GptOssMxfp4.fusedName(name) + GptOssMxfp4.SCALES)) {
                String fused = GptOssMxfp4.fusedName(name);
                out.put(fused, GptOssMxfp4.decode(weight, tensors.get(fused + GptOssMxfp4.SCALES), dtype, kernel));
                modules.add(fused);
                scales.add(fused + GptOssMxfp4.SCALES);
                seen = QuantFormat.MXFP4;
                continue;
            }
            if (module == null || !tensors.containsKey(module + ".weight_scale")) {
                out.put(name, weight);
                continue;
            }
            Tensor scale = tensors.get(module + ".weight_scale");
            Tensor scale2 = tensors.get(module + ".weight_scale_2");
            QuantFormat format = declared != null ? declared : inferFormat(weight, scale, scale2 != null);
            Shape formatScale = format.scaleShape(format.decodedShape(weight.shape()));
            if (!scale.shape().equals(formatScale) && isStoredFormOf(scale.shape(), formatScale)) {
                scale = new ReshapedTensor(scale, formatScale);
            }
            if (weight.dtype() != format.weightType() || scale.dtype() != format.scaleType() || (format.hasScale2() && scale2 == null)) {
                throw new MoeportException(weight.where() + ": " + weight.describe() + " with scale " + scale.describe()
                        + " is not a " + format.cliName() + " weight");
            }
            DequantizedTensor decoded = new DequantizedTensor(kernel, format, weight, scale, scale2, dtype);
            Shape expectedScale = format.scaleShape(decoded.shape());
            if (!expectedScale.equals(scale.shape())) {
                throw new MoeportException(scale.where() + ": shape " + scale.shape() + " does not fit weight " + weight.shape()
                        + " in " + format.cliName() + " (expected " + expectedScale + ")");
            }
            out.put(name, decoded);
            modules.add(module);
            scales.addAll(List.of(module + ".weight_scale", module + ".weight_scale_2", module + ".input_scale"));
            seen = format;
        }
        out.keySet().removeAll(scales);
        return new Decoded(out, modules, seen);
    }

    private static final String PACKED = ".weight_packed";
    private static final String GLOBAL_SCALE = ".weight_global_scale";

    /**
     * compressed-tensors' NVFP4 ({@code nvfp4-pack-quantized}): {@code weight_packed} (E2M1 pairs), the E4M3 block
     * {@code weight_scale} and {@code weight_global_scale}, the reciprocal of Model Optimizer's {@code weight_scale_2}
     * (compressed-tensors' converter from Model Optimizer, modelopt_nvfp4.py). Decoded with {@code 1 / global} as the
     * second-level scale, an f32 division, so values may differ from a division by the global scale in the last bit.
     */
    private static Tensor compressedTensorsNvfp4(String module, Map<String, Tensor> tensors, DType dtype, QuantKernel kernel) {
        Tensor packed = tensors.get(module + PACKED);
        Tensor scale = tensors.get(module + ".weight_scale");
        Tensor global = tensors.get(module + GLOBAL_SCALE);
        if (scale == null || global == null || global.dtype() != DType.F32 || global.numel() != 1) {
            throw new MoeportException(packed.where() + ": a compressed-tensors NVFP4 weight needs its weight_scale and an f32 weight_global_scale");
        }
        if (packed.dtype() != QuantFormat.NVFP4.weightType() || scale.dtype() != QuantFormat.NVFP4.scaleType()) {
            throw new MoeportException(packed.where() + ": " + packed.describe() + " with scale " + scale.describe() + " is not an nvfp4 weight");
        }
        float g;
        try (java.lang.foreign.Arena arena = java.lang.foreign.Arena.ofConfined()) {
            g = global.bytes(arena).get(dev.moeport.tensor.FloatFormats.FLOAT_LE, 0);
        }
        if (!(g > 0) || Float.isInfinite(g)) {
            throw new MoeportException(global.where() + ": global scale " + g + " is not a positive finite number");
        }
        Tensor scale2 = dev.moeport.tensor.TensorView.ofFloats(module + ".weight_scale_2", 1f / g);
        return new DequantizedTensor(kernel, QuantFormat.NVFP4, packed, scale, scale2, dtype);
    }

    /**
     * compressed-tensors' MXFP4 ({@code mxfp4-pack-quantized}): {@code weight_packed} (E2M1 pairs, low nibble first) and
     * the E8M0 exponents {@code weight_scale} (uint8), no global scale (compressors/mxfp4/base.py, mx_utils.py).
     */
    private static Tensor compressedTensorsMxfp4(String module, Map<String, Tensor> tensors, DType dtype, QuantKernel kernel) {
        Tensor packed = tensors.get(module + PACKED);
        Tensor scale = tensors.get(module + ".weight_scale");
        if (scale == null || packed.dtype() != QuantFormat.MXFP4.weightType() || scale.dtype() != QuantFormat.MXFP4.scaleType()) {
            throw new MoeportException(packed.where() + ": " + packed.describe() + " with scale " + (scale == null ? "none" : scale.describe())
                    + " is neither an nvfp4 weight (it has no weight_global_scale) nor an mxfp4 one (U8 weight_scale)");
        }
        Tensor decoded = new DequantizedTensor(kernel, QuantFormat.MXFP4, packed, scale, null, dtype);
        if (!QuantFormat.MXFP4.scaleShape(decoded.shape()).equals(scale.shape())) {
            throw new MoeportException(scale.where() + ": shape " + scale.shape() + " does not fit weight " + packed.shape() + " in mxfp4 (expected "
                    + QuantFormat.MXFP4.scaleShape(decoded.shape()) + ")");
        }
        return decoded;
    }

    /**
     * transformers' fine-grained FP8 ({@code quant_method: fp8}, DeepSeek-V3's layout): an E4M3 weight and
     * {@code weight_scale_inv}, one f32 per 128 x 128 block, the value being the E4M3 value times its block's scale; or
     * its {@code mxfp8}: the E8M0 exponents (uint8) of blocks of 1 x 32 under the same name (integrations/finegrained_fp8.py).
     */
    private static Tensor fineGrainedFp8(QuantFormat format, Tensor weight, Tensor scaleInv, DType dtype, QuantKernel kernel) {
        if (weight.dtype() != DType.F8_E4M3 || scaleInv.dtype() != format.scaleType() || weight.rank() != 2
                || !format.scaleShape(weight.shape()).equals(scaleInv.shape())) {
            throw new MoeportException(scaleInv.where() + ": " + weight.describe() + " with weight_scale_inv " + scaleInv.describe()
                    + " is neither an FP8 weight with f32 128 x 128 block scales nor an MXFP8 one with U8 1 x 32 block exponents");
        }
        return new DequantizedTensor(kernel, format, weight, scaleInv, null, dtype);
    }

    private static String module(String weightName) {
        return QuantSelection.module(weightName);
    }

}
