package dev.moeport.convert;

import dev.moeport.MoeportException;
import dev.moeport.tensor.DType;
import dev.moeport.tensor.FloatFormats;
import dev.moeport.tensor.Tensor;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * The calibrated amax values ModelOpt leaves beside a weight: {@code <module>.weight_quantizer._amax}
 * feeds the weight's per-tensor scale, {@code <module>.input_quantizer._amax} its {@code input_scale}.
 * Routed experts share one input quantizer per layer and projection (one {@code input_scale} for all),
 * so their input amax is the largest over the group. Understands MCore names (TEGroupedMLP with one
 * quantizer per grouped module, possibly one amax per expert, or one quantizer per expert; SequentialMLP
 * with one per expert) and
 * HF names ({@code experts.{e}.up_proj}).
 */
public final class Calibration {
    private static final Pattern SEQUENTIAL = Pattern.compile("(.*\\.experts)\\.local_experts\\.(\\d+)\\.(linear_fc\\d)");
    private static final Pattern GROUPED = Pattern.compile(".*\\.experts\\.linear_fc\\d");
    private static final Pattern HF_EXPERT = Pattern.compile("(.*\\.experts)\\.(\\d+)\\.(.+)");
    /**
     * A TEGroupedMLP's weight quantizer of one expert: since Model Optimizer PR 1550 each expert has its own
     * (modelopt/torch/quantization/plugins/transformer_engine.py, GroupedQuantizer surfaced as
     * {@code weight_quantizer.{i}}); before, one served the whole grouped linear.
     */
    private static final Pattern EXPERT_WEIGHT_QUANTIZER = Pattern.compile("(.*\\.experts\\.linear_fc\\d)\\.weight_quantizer\\.(\\d+)\\._amax");

    /** Per weight tensor name: its calibrated weight amax. */
    private final Map<String, Float> weightAmax = new HashMap<>();
    /** Per group (a module, or the experts of one layer and projection): the largest weight amax given once for the group. */
    private final Map<String, Float> groupWeightAmax = new HashMap<>();
    /** Per group: the largest input amax. */
    private final Map<String, Float> inputAmax = new HashMap<>();

    public static final Calibration NONE = new Calibration();

    private Calibration() {}

    /**
     * @param weights the names of the weights the state belongs to: a grouped module's amax holds one
     *     value per expert only when it has as many values as the module has experts
     */
    public static Calibration read(Map<String, Tensor> quantizerState, java.util.Set<String> weights) {
        Calibration c = new Calibration();
        for (Map.Entry<String, Tensor> e : quantizerState.entrySet()) {
            String name = e.getKey();
            if (name.endsWith("._pre_quant_scale")) {
                throw new MoeportException("tensor '" + name + "': pre-quantization scaling (AWQ / SmoothQuant) is not supported;"
                        + " export from a checkpoint calibrated for plain max scaling");
            }
            Matcher perExpert = EXPERT_WEIGHT_QUANTIZER.matcher(name);
            if (perExpert.matches()) {
                c.weightAmax.put(perExpert.group(1) + ".weight" + perExpert.group(2), max(values(e.getValue())));
                continue;
            }
            boolean weight = name.endsWith(".weight_quantizer._amax");
            boolean input = name.endsWith(".input_quantizer._amax");
            if (!weight && !input) {
                continue; // other quantizers (kv-cache, output) carry nothing moeport exports
            }
            String module = name.substring(0, name.lastIndexOf(weight ? ".weight_quantizer" : ".input_quantizer"));
            float[] values = values(e.getValue());
            Matcher seq = SEQUENTIAL.matcher(module);
            String group;
            if (seq.matches()) {
                group = seq.group(1) + "." + seq.group(3);
                if (weight) {
                    c.weightAmax.put(group + ".weight" + seq.group(2), max(values));
                }
            } else if (GROUPED.matcher(module).matches()) {
                group = module;
                if (weight && values.length > 1 && values.length == experts(weights, module)) {
                    for (int i = 0; i < values.length; i++) {
                        c.weightAmax.put(module + ".weight" + i, values[i]);
                    }
                } else if (weight) {
                    c.groupWeightAmax.put(group, max(values));
                }
            } else {
                Matcher hf = HF_EXPERT.matcher(module);
                group = hf.matches() ? hf.group(1) + ".*." + hf.group(3) : module;
                if (weight) {
                    c.weightAmax.put(module + ".weight", max(values));
                }
            }
            if (input) {
                c.inputAmax.merge(group, max(values), Math::max);
            }
        }
        return c;
    }

    /**
     * The calibrated weight amax of weights (MCore canonical or HF names) that share one scale: the
     * largest of theirs, or null unless each has one.
     */
    public Float weightAmax(List<String> weightNames) {
        return largest(weightNames, name -> {
            Float own = weightAmax.get(name);
            return own != null ? own : groupWeightAmax.get(group(name));
        });
    }

    /** The calibrated input amax of the modules of these weights (one input), shared by an expert group: the largest, or null. */
    public Float inputAmax(List<String> weightNames) {
        return largest(weightNames, name -> inputAmax.get(group(name)));
    }

    private static Float largest(List<String> names, java.util.function.Function<String, Float> lookup) {
        Float max = null;
        for (String name : names) {
            Float v = lookup.apply(name);
            if (v == null) {
                return null;
            }
            max = max == null ? v : Math.max(max, v);
        }
        return max;
    }

    /** How many {@code module.weight<e>} tensors there are. */
    private static long experts(java.util.Set<String> weights, String module) {
        return weights.stream().map(McoreLayout::expertWeight).filter(w -> w != null && w.module().equals(module)).count();
    }

    private static String group(String weightName) {
        McoreLayout.ExpertWeight expert = McoreLayout.expertWeight(weightName);
        if (expert != null) {
            return expert.module();
        }
        String module = weightName.endsWith(".weight") ? weightName.substring(0, weightName.length() - ".weight".length()) : weightName;
        Matcher hf = HF_EXPERT.matcher(module);
        return hf.matches() ? hf.group(1) + ".*." + hf.group(3) : module;
    }

    private static float[] values(Tensor t) {
        if (t.dtype() != DType.F32 && t.dtype() != DType.BF16 && t.dtype() != DType.F16) {
            throw new MoeportException(t.where() + ": an amax must be a floating-point tensor, not " + t.dtype());
        }
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment bytes = t.bytes(arena);
            float[] v = new float[(int) t.numel()];
            for (int i = 0; i < v.length; i++) {
                v[i] = FloatFormats.read(bytes, t.dtype(), i);
                if (!Float.isFinite(v[i]) || v[i] < 0) {
                    throw new MoeportException(t.where() + ": calibrated amax " + v[i] + " is not a finite non-negative number");
                }
            }
            if (v.length == 0) {
                throw new MoeportException(t.where() + ": empty amax");
            }
            return v;
        }
    }

    private static float max(float[] values) {
        float m = 0;
        for (float v : values) {
            m = Math.max(m, v);
        }
        return m;
    }
}
