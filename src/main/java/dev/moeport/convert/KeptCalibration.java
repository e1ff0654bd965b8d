package dev.moeport.convert;

import dev.moeport.MoeportException;
import dev.moeport.plan.Piece;
import dev.moeport.quant.QuantFormat;
import dev.moeport.tensor.DType;
import dev.moeport.tensor.FloatFormats;
import dev.moeport.tensor.Tensor;
import dev.moeport.tensor.TensorView;
import java.lang.foreign.Arena;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Keeps a quantized Hugging Face checkpoint's calibration through {@code import --keep-quantized}, the
 * way Megatron-Core holds a quantized model: high-precision weights plus Model Optimizer's quantizer
 * state. Each module's per-tensor scales become {@code weight_quantizer._amax} and
 * {@code input_quantizer._amax}, chosen so that a later {@code export --format} of the same format gives
 * back the same {@code weight_scale}/{@code weight_scale_2} and {@code input_scale}, bit for bit. Only
 * formats with per-tensor scales (fp8, nvfp4) have a calibration to keep; block scales are recomputed.
 */
public final class KeptCalibration {
    private KeptCalibration() {}

    /**
     * The quantizer-state tensors for the imported weights in {@code mapped} whose sources are all
     * quantized modules of {@code hf}.
     */
    public static List<MappedTensor> of(QuantFormat format, Map<String, Tensor> hf, List<MappedTensor> mapped) {
        if (!format.usesTensorAmax()) {
            throw new MoeportException(format.cliName() + " has no per-tensor calibration to keep: its scales are per block or row and an"
                    + " export recomputes them (drop --keep-quantized)");
        }
        String global = format.hasScale2() ? ".weight_scale_2" : ".weight_scale";
        List<MappedTensor> out = new ArrayList<>();
        // TEGroupedMLP keeps one weight amax per expert in one vector, and one input amax per module.
        Map<String, float[]> grouped = new LinkedHashMap<>();
        Map<String, Float> groupedInput = new LinkedHashMap<>();
        for (MappedTensor t : mapped) {
            List<String> modules = t.sources().stream().map(n -> n.endsWith(".weight") ? QuantSelection.module(n) : null).toList();
            if (modules.contains(null) || !modules.stream().allMatch(m -> hf.containsKey(m + global))) {
                continue;
            }
            Float input = largest(hf, modules, ".input_scale", format);
            McoreLayout.ExpertWeight te = McoreLayout.expertWeight(t.name());
            if (te != null) {
                String module = te.module();
                int expert = te.expert();
                float[] values = grouped.computeIfAbsent(module, k -> new float[0]);
                if (values.length <= expert) {
                    values = java.util.Arrays.copyOf(values, expert + 1);
                    grouped.put(module, values);
                }
                values[expert] = largest(hf, modules, global, format);
                if (input != null) {
                    groupedInput.merge(module, input, Math::max);
                }
            } else if (t.name().endsWith(".weight")) {
                String module = QuantSelection.module(t.name());
                long experts = t.rank() == 3 ? t.shape().dim(0) : 1;
                if (experts > 1) {
                    // A stacked [E, out, in] tensor: its sources are each expert's, in order.
                    int perExpert = modules.size() / (int) experts;
                    float[] values = new float[(int) experts];
                    for (int e = 0; e < experts; e++) {
                        values[e] = largest(hf, modules.subList(e * perExpert, (e + 1) * perExpert), global, format);
                    }
                    out.add(amax(module + ".weight_quantizer._amax", values));
                } else {
                    out.add(amax(module + ".weight_quantizer._amax", largest(hf, modules, global, format)));
                }
                if (input != null) {
                    out.add(amax(module + ".input_quantizer._amax", input));
                }
            }
        }
        grouped.forEach((module, values) -> out.add(amax(module + ".weight_quantizer._amax", values)));
        groupedInput.forEach((module, value) -> out.add(amax(module + ".input_quantizer._amax", value)));
        return out;
    }

    /** The largest amax that gives back the modules' scale {@code suffix}, or null when one of them has none. */
    private static Float largest(Map<String, Tensor> hf, List<String> modules, String suffix, QuantFormat format) {
        Float max = null;
        for (String m : modules) {
            Tensor scale = hf.get(m + suffix);
            if (scale == null) {
                return null;
            }
            float amax = amaxFor(format, scalar(scale));
            max = max == null ? amax : Math.max(max, amax);
        }
        return max;
    }

    /** An amax whose scale, as {@link QuantFormat#tensorScale} computes it, is exactly {@code scale}. */
    static float amaxFor(QuantFormat format, float scale) {
        float amax = scale * format.tensorScaleRange();
        for (int step = 0; step < 8 && format.tensorScale(amax) != scale; step++) {
            amax = format.tensorScale(amax) < scale ? Math.nextUp(amax) : Math.nextDown(amax);
        }
        return amax;
    }

    private static float scalar(Tensor t) {
        if (t.numel() != 1 || t.dtype() != DType.F32) {
            throw new MoeportException(t.where() + ": expected one f32 per-tensor scale, found " + t.describe());
        }
        try (Arena arena = Arena.ofConfined()) {
            return t.bytes(arena).get(FloatFormats.FLOAT_LE, 0);
        }
    }

    private static MappedTensor amax(String name, float... values) {
        TensorView view = TensorView.ofFloats(name, values);
        return new MappedTensor(name, DType.F32, view.shape(), List.of(new Piece.Source(view)), List.of(name), null, null, true);
    }
}
