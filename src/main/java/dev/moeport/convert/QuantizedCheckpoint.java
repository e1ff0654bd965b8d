package dev.moeport.convert;


import com.fasterxml.jackson.databind.ObjectMapper;
import dev.moeport.MoeportException;
import dev.moeport.plan.Job;
import dev.moeport.plan.OutputTensor;
import dev.moeport.plan.Piece;
import dev.moeport.quant.QuantFormat;
import dev.moeport.tensor.DType;
import dev.moeport.tensor.Tensor;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * A quantized Hugging Face checkpoint read back: which modules are quantized, in which format, and
 * the jobs that turn each back into a floating-point weight ({@code moeport dequantize}, import).
 */
public final class QuantizedCheckpoint {
    private static final ObjectMapper JSON = new ObjectMapper();

    private QuantizedCheckpoint() {}

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
                algo = JSON.readTree(config.toFile()).at("/quantization_config/quant_algo").asText(null);
            }
            if (algo == null) {
                return null;
            }
            for (QuantFormat f : QuantFormat.values()) {
                if (QuantConfig.quantAlgo(f).equalsIgnoreCase(algo)) {
                    return f;
                }
            }
            throw new MoeportException(folder + ": quant_algo '" + algo + "' is not one moeport reads");
        } catch (IOException e) {
            throw new MoeportException(folder + ": cannot read the quantization config (" + e.getMessage() + ")", e);
        }
    }

    /** The format of one module, from the dtypes of its weight and scales. */
    static QuantFormat inferFormat(Tensor weight, Tensor scale, boolean hasScale2) {
        DType w = weight.dtype();
        DType s = scale.dtype();
        if (w == DType.U8 && s == DType.F8_E4M3 && hasScale2) {
            return QuantFormat.NVFP4;
        }
        if (w == DType.U8 && s == DType.U8) {
            return QuantFormat.MXFP4;
        }
        if (w == DType.F8_E4M3 && s == DType.U8) {
            return QuantFormat.MXFP8;
        }
        if (w == DType.F8_E4M3 && s == DType.F32 && scale.rank() == 0) {
            return QuantFormat.FP8;
        }
        throw new MoeportException(weight.where() + ": cannot tell its quantization format from " + w + " weight and " + s + scale.shape()
                + " scale (dequantization reads fp8, nvfp4, mxfp4 and mxfp8)");
    }

    /** The tensors of a quantized checkpoint, as jobs: quantized modules dequantized to {@code dtype}, the rest copied. */
    public record Dequantized(List<Job> jobs, List<String> modules, QuantFormat format) {}

    public static Dequantized dequantize(Map<String, Tensor> tensors, QuantFormat declared, DType dtype) {
        List<Job> jobs = new ArrayList<>();
        List<String> modules = new ArrayList<>();
        Set<String> consumed = new HashSet<>();
        QuantFormat seen = declared;
        for (Map.Entry<String, Tensor> e : tensors.entrySet()) {
            String name = e.getKey();
            if (!name.endsWith(".weight") || !tensors.containsKey(module(name) + ".weight_scale")) {
                continue;
            }
            String module = module(name);
            Tensor weight = e.getValue();
            Tensor scale = tensors.get(module + ".weight_scale");
            Tensor scale2 = tensors.get(module + ".weight_scale_2");
            QuantFormat format = declared != null ? declared : inferFormat(weight, scale, scale2 != null);
            if (format != QuantFormat.FP8 && format != QuantFormat.NVFP4 && format != QuantFormat.MXFP4 && format != QuantFormat.MXFP8) {
                throw new MoeportException(weight.where() + ": dequantization of " + format.cliName() + " is not supported (fp8, nvfp4, mxfp4, mxfp8)");
            }
            if (weight.dtype() != format.weightType() || scale.dtype() != format.scaleType() || (format == QuantFormat.NVFP4 && scale2 == null)) {
                throw new MoeportException(weight.where() + ": " + weight.describe() + " with scale " + scale.describe()
                        + " is not a " + format.cliName() + " weight");
            }
            long in = format == QuantFormat.NVFP4 || format == QuantFormat.MXFP4 ? weight.shape().dim(-1) * 2 : weight.shape().dim(-1);
            var shape = weight.shape().with(-1, in);
            if (!format.scaleShape(shape).equals(scale.shape())) {
                throw new MoeportException(scale.where() + ": shape " + scale.shape() + " does not fit weight " + weight.shape()
                        + " in " + format.cliName() + " (expected " + format.scaleShape(shape) + ")");
            }
            jobs.add(new Job.Copy(new OutputTensor(name, dtype, shape), decoded(format, weight, scale, scale2, dtype), "dequantize " + format.cliName()));
            modules.add(module);
            consumed.addAll(List.of(name, module + ".weight_scale", module + ".weight_scale_2", module + ".input_scale"));
            seen = format;
        }
        for (Map.Entry<String, Tensor> e : tensors.entrySet()) {
            if (!consumed.contains(e.getKey())) {
                Tensor t = e.getValue();
                jobs.add(new Job.Copy(new OutputTensor(e.getKey(), t.dtype(), t.shape()), List.of(new Piece.Source(t)), "copy"));
            }
        }
        return new Dequantized(jobs, modules, seen);
    }

    /**
     * A quantized weight as decoded matrices: a stack {@code [E, out, in']} becomes E pieces, each with
     * its expert's scales (fp8 keeps one scale per expert of a stack, or one for all).
     */
    static List<Piece> decoded(QuantFormat format, Tensor weight, Tensor scale, Tensor scale2, DType dtype) {
        if (weight.rank() <= 2) {
            return List.of(new Piece.Dequantized(format, weight, scale, scale2, dtype));
        }
        List<Piece> out = new ArrayList<>();
        for (long i = 0; i < weight.shape().dim(0); i++) {
            Tensor s = format == QuantFormat.FP8 && scale.rank() == 0 ? scale : scale.select(i, scale.name() + "[" + i + "]");
            out.addAll(decoded(format, weight.select(i, weight.name() + "[" + i + "]"), s, scale2, dtype));
        }
        return out;
    }

    private static String module(String weightName) {
        return QuantSelection.module(weightName);
    }

}
