package dev.moeport.check;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.moeport.MoeportException;
import dev.moeport.convert.QuantConfig;
import dev.moeport.convert.QuantizedCheckpoint;
import dev.moeport.format.Checkpoint;
import dev.moeport.quant.QuantFormat;
import dev.moeport.tensor.Shape;
import dev.moeport.io.IoErrors;
import dev.moeport.tensor.DType;
import dev.moeport.tensor.FloatFormats;
import dev.moeport.tensor.Tensor;
import dev.moeport.util.Glob;
import dev.moeport.util.NaturalOrder;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/**
 * A pre-flight of a quantized Hugging Face checkpoint against what serving engines' loaders enforce or silently
 * assume (vLLM's {@code model_executor/layers/quantization/modelopt.py} and its compressed-tensors MoE schemes fuse
 * gate/up and q/k/v into one weight with one global scale, and read a missing per-expert {@code input_scale} as
 * zero): scales that are zero, NaN or infinite; fused siblings whose global or input scales differ; experts missing a
 * scale their siblings have; an exclusion list naming quantized modules; config keys the engines require.
 */
public final class PreflightCheck {
    /** One problem, naming the tensor (or config file) it is about. */
    public record Problem(String tensor, String message) {
        @Override
        public String toString() {
            return tensor + ": " + message;
        }
    }

    /**
     * Suffixes of the scale tensors of the layouts moeport reads (Model Optimizer's, compressed-tensors' NVFP4 global
     * scales, DeepSeek's FP8 blocks, GPT-OSS's MXFP4).
     */
    private static final List<String> SCALE_SUFFIXES = List.of(".weight_scale_inv", ".weight_scale_2", ".weight_global_scale",
            ".input_global_scale", ".weight_scale", ".input_scale", "_scales");
    /** Scales that stand for a whole tensor (or one per expert): a zero one makes the dequantized weight or input zero. */
    private static final Set<String> GLOBAL_SCALES = Set.of(".weight_scale_2", ".input_scale", ".weight_global_scale", ".input_global_scale");
    private static final Pattern EXPERT = Pattern.compile("^(.*\\.experts\\.)(\\d+)(\\..*)$");
    /** Projections engines fuse into one weight, and so read with one global and one input scale. */
    private static final List<List<String>> FUSED = List.of(List.of("gate_proj", "up_proj"), List.of("w1", "w3"), List.of("q_proj", "k_proj", "v_proj"));
    /** E4M3 has no infinity; 0x7F and 0xFF are its NaNs. */
    private static final int E4M3_NAN_BITS = 0x7F;
    /** E8M0's only special value: all ones is NaN. */
    private static final int E8M0_NAN = 0xFF;
    private static final ObjectMapper JSON = new ObjectMapper();

    private PreflightCheck() {}

    /**
     * The serving engines, and the {@code quant_algo} values their Model Optimizer loaders accept (null: not encoded).
     * vLLM: {@code QUANT_ALGOS} of model_executor/layers/quantization/modelopt.py, compared upper-cased as its
     * from_config does. TensorRT-LLM: its {@code QuantAlgo} enum (tensorrt_llm/quantization/mode.py), exactly, plus
     * Model Optimizer's {@code fp8_pb_wo}, which its load_modelopt_quant_config maps to FP8_BLOCK_SCALES; it reads a
     * MIXED_PRECISION checkpoint's layers from {@code quant_cfg.json}. SGLang's list is not encoded.
     */
    public enum Engine {
        vllm(Set.of("FP8", "FP8_PER_CHANNEL_PER_TOKEN", "FP8_PB_WO", "NVFP4", "W4A16_NVFP4", "MXFP8", "MIXED_PRECISION"), true),
        sglang(null, false),
        trtllm(Set.of("fp8_pb_wo", "W8A16", "W4A16", "W4A16_AWQ", "W4A8_AWQ", "W8A16_GPTQ", "W4A16_GPTQ", "W8A8_SQ_PER_CHANNEL", "FP8",
                "FP8_PER_CHANNEL_PER_TOKEN", "FP8_BLOCK_SCALES", "MIXED_PRECISION", "NVFP4", "W4A8_NVFP4_FP8", "W4A8_MXFP4_FP8",
                "W4A8_MXFP4_MXFP8", "W4A16_MXFP4"), false);

        private final Set<String> quantAlgos;
        private final boolean upperCases;

        Engine(Set<String> quantAlgos, boolean upperCases) {
            this.quantAlgos = quantAlgos;
            this.upperCases = upperCases;
        }

        /** Whether this engine's Model Optimizer loader accepts {@code algo} (true where the list is not encoded). */
        public boolean loads(String algo) {
            return quantAlgos == null || quantAlgos.contains(upperCases ? algo.toUpperCase(java.util.Locale.ROOT) : algo);
        }

        private String accepted() {
            return String.join(", ", new TreeSet<>(quantAlgos));
        }
    }

    /** Every problem of {@code ckpt} for vLLM (its folder {@code folder} holds the config files), sorted by tensor name. */
    public static List<Problem> run(Checkpoint ckpt, Path folder) {
        return run(ckpt, folder, Engine.vllm);
    }

    /** Every problem of {@code ckpt} for {@code engine} (its folder {@code folder} holds the config files), sorted by tensor name. */
    public static List<Problem> run(Checkpoint ckpt, Path folder, Engine engine) {
        List<Problem> problems = new ArrayList<>();
        Map<String, Tensor> tensors = ckpt.tensors();
        Set<String> quantized = quantizedModules(tensors.keySet());
        Map<String, QuantFormat> listedLayers = new TreeMap<>();
        List<String> excluded = checkConfig(folder, quantized, engine, listedLayers, problems);
        try (Arena arena = Arena.ofConfined()) {
            for (Tensor t : tensors.values()) {
                String suffix = scaleSuffix(t.name());
                if (suffix != null) {
                    checkValues(t, GLOBAL_SCALES.contains(suffix) || t.dtype() == DType.F32 || t.dtype() == DType.BF16, arena, problems);
                }
            }
            checkFusedSiblings(tensors, arena, problems);
        }
        checkExpertSiblings(tensors, problems);
        checkLayouts(tensors, quantized, declaredFormat(folder, problems), listedLayers, engine == Engine.vllm && isModelopt(folder), problems);
        for (String module : quantized) {
            String pattern = excluded.stream().filter(e -> names(e, module)).findFirst().orElse(null);
            if (pattern != null) {
                problems.add(new Problem(module, "is quantized, but the exclusion list names it ('" + pattern + "'): engines load it as unquantized"));
            }
        }
        problems.sort((a, b) -> NaturalOrder.INSTANCE.compare(a.tensor(), b.tensor()));
        return problems;
    }

    private static String scaleSuffix(String name) {
        return SCALE_SUFFIXES.stream().filter(name::endsWith).findFirst().orElse(null);
    }

    /** Modules with a weight scale (the module name, without {@code .weight_scale} or GPT-OSS's {@code _scales}). */
    private static Set<String> quantizedModules(Set<String> names) {
        Set<String> modules = new TreeSet<>();
        for (String n : names) {
            if (n.endsWith(".weight_scale") || n.endsWith(".weight_scale_inv")) {
                modules.add(n.substring(0, n.lastIndexOf(".weight_scale")));
            } else if (n.endsWith("_scales")) {
                modules.add(n.substring(0, n.length() - "_scales".length()));
            }
        }
        return modules;
    }

    /** Whether an exclusion entry names a module: a wildcard pattern matches it whole, a plain name is it or a module above it. */
    private static boolean names(String entry, String module) {
        if (entry.contains("*") || entry.contains("?")) {
            return Glob.anyMatches(List.of(Glob.of(entry)), module);
        }
        return module.equals(entry) || module.startsWith(entry + ".");
    }

    /**
     * The required keys of the quantization config (Model Optimizer's {@code hf_quant_config.json}, else
     * {@code config.json}'s {@code quantization_config}); returns its exclusion list.
     */
    private static List<String> checkConfig(Path folder, Set<String> quantized, Engine engine, Map<String, QuantFormat> listedLayers,
                                            List<Problem> problems) {
        Path hfQuant = folder.resolve("hf_quant_config.json");
        Path config = folder.resolve("config.json");
        JsonNode q = null;
        String file = null;
        if (Files.exists(hfQuant)) {
            q = read(hfQuant).get("quantization");
            file = hfQuant.getFileName().toString();
        } else if (Files.exists(config)) {
            q = read(config).get("quantization_config");
            file = config.getFileName().toString();
        }
        List<String> excluded = new ArrayList<>();
        if (q == null || !q.isObject()) {
            if (!quantized.isEmpty()) {
                problems.add(new Problem(folder.toString(), "has scale tensors but no quantization config (hf_quant_config.json or config.json quantization_config)"));
            }
            return excluded;
        }
        String method = q.path("quant_method").asText("modelopt");
        List<String> required = switch (method) {
            // Model Optimizer's keys, which vLLM's modelopt loader reads (an NVFP4 checkpoint without them is refused).
            // MIXED_PRECISION: each layer's own description instead of an exclusion list (a layer not listed stays unquantized).
            case "modelopt" -> q.path("quant_algo").asText("").equals(QuantConfig.MIXED_PRECISION)
                    ? List.of("quant_algo", "kv_cache_quant_algo", "quantized_layers")
                    : q.path("quant_algo").asText("").contains("FP4") || q.path("quant_algo").asText("").startsWith("W4")
                    ? List.of("quant_algo", "kv_cache_quant_algo", "group_size", "exclude_modules")
                    : List.of("quant_algo", "kv_cache_quant_algo", "exclude_modules");
            // transformers' fine-grained FP8 (DeepSeek-V3's layout) and its MXFP8: blocks need their size.
            case "fp8", "mxfp8" -> quantized.isEmpty() ? List.of() : List.of("weight_block_size");
            default -> List.of();
        };
        for (String key : required) {
            if (!q.has(key)) {
                problems.add(new Problem(file, "quantization config has no '" + key + "' (required for quant_method " + method + ")"));
            }
        }
        checkQuantizedLayers(file, q.path("quantized_layers"), quantized, listedLayers, problems);
        String algo = q.path("quant_algo").asText(null);
        if (method.equals("modelopt") && algo != null && !engine.loads(algo)) {
            problems.add(new Problem(file, engine + "'s Model Optimizer loader refuses quant_algo '" + algo + "' (it reads " + engine.accepted() + ")"));
        }
        if (engine == Engine.trtllm && "MIXED_PRECISION".equals(algo) && !Files.exists(folder.resolve("quant_cfg.json"))) {
            problems.add(new Problem(file, "quant_algo MIXED_PRECISION, but no quant_cfg.json beside it (TensorRT-LLM reads the layers' formats there)"));
        }
        for (String key : List.of("exclude_modules", "modules_to_not_convert", "ignore")) {
            q.path(key).forEach(e -> excluded.add(e.asText()));
        }
        return excluded;
    }

    /**
     * MIXED_PRECISION's {@code quantized_layers} against the tensors: every module with scales listed (engines load
     * one that is not as unquantized), every listed module quantized, every quant_algo one moeport knows. Fills
     * {@code listed} with each listed module's format, which its tensors are then checked against.
     */
    private static void checkQuantizedLayers(String file, JsonNode layers, Set<String> quantized, Map<String, QuantFormat> listed,
                                             List<Problem> problems) {
        if (!layers.isObject()) {
            return;
        }
        layers.properties().forEach(e -> {
            String algo = e.getValue().path("quant_algo").asText("");
            QuantFormat format = QuantConfig.formatOfAlgo(algo);
            if (format == null) {
                problems.add(new Problem(e.getKey(), "quantized_layers gives quant_algo '" + algo + "', not one moeport reads"));
            } else {
                listed.put(e.getKey(), format);
            }
            if (!quantized.contains(e.getKey())) {
                problems.add(new Problem(e.getKey(), "is listed in " + file + " quantized_layers, but has no scale tensors"));
            }
        });
        quantized.stream().filter(m -> !layers.has(m)).forEach(m -> problems.add(new Problem(m,
                "is quantized, but " + file + " quantized_layers does not list it: engines load it as unquantized")));
    }

    private static JsonNode read(Path file) {
        try {
            return JSON.readTree(file.toFile());
        } catch (IOException e) {
            throw new MoeportException(file + ": cannot read (" + IoErrors.why(e) + ")", e);
        }
    }

    /** Zero (where {@code zeroIsWrong}), NaN and infinite values of a scale tensor. */
    private static void checkValues(Tensor t, boolean zeroIsWrong, Arena arena, List<Problem> problems) {
        DType d = t.dtype();
        if (d != DType.F32 && d != DType.BF16 && d != DType.F8_E4M3 && d != DType.U8 && d != DType.F8_E8M0) {
            problems.add(new Problem(t.name(), "scale of dtype " + d + " (scales are F32, BF16, F8_E4M3 or E8M0/U8)"));
            return;
        }
        MemorySegment bytes = t.bytes(arena);
        long n = t.numel();
        long zeros = 0;
        long nonFinite = 0;
        for (long i = 0; i < n; i++) {
            float v = switch (d) {
                case F32 -> bytes.get(FloatFormats.FLOAT_LE, i * 4);
                case BF16 -> FloatFormats.bf16ToFloat(bytes.get(FloatFormats.SHORT_LE, i * 2));
                case F8_E4M3 -> (bytes.get(ValueLayout.JAVA_BYTE, i) & E4M3_NAN_BITS) == E4M3_NAN_BITS ? Float.NaN : FloatFormats.e4m3ToFloat(bytes.get(ValueLayout.JAVA_BYTE, i));
                // E8M0 exponents: never zero, NaN when all ones.
                default -> (bytes.get(ValueLayout.JAVA_BYTE, i) & 0xFF) == E8M0_NAN ? Float.NaN : 1f;
            };
            if (!Float.isFinite(v)) {
                nonFinite++;
            } else if (v == 0f) {
                zeros++;
            }
        }
        if (nonFinite > 0) {
            problems.add(new Problem(t.name(), nonFinite + " of " + n + " scale value(s) are NaN or infinite"));
        }
        if (zeroIsWrong && zeros > 0) {
            problems.add(new Problem(t.name(), zeros + " of " + n + " scale value(s) are zero"));
        }
    }

    /**
     * Fused siblings (gate/up, w1/w3, q/k/v of one parent) whose NVFP4 global scales or input scales differ: the block
     * scales of each are relative to its own global scale, and the fused weight has only one.
     */
    private static void checkFusedSiblings(Map<String, Tensor> tensors, Arena arena, List<Problem> problems) {
        for (String name : tensors.keySet()) {
            for (List<String> group : FUSED) {
                String first = "." + group.getFirst() + ".";
                int at = name.lastIndexOf(first);
                if (at < 0) {
                    continue;
                }
                String parent = name.substring(0, at + 1);
                String suffix = name.substring(at + first.length() - 1);
                // Per-tensor FP8 weight scales may differ: vLLM requantizes the fused weight with their maximum.
                if (!GLOBAL_SCALES.contains(suffix)) {
                    continue;
                }
                Tensor a = tensors.get(name);
                if (a.numel() != 1 || a.dtype() != DType.F32) {
                    continue;
                }
                float va = a.bytes(arena).get(FloatFormats.FLOAT_LE, 0);
                for (String other : group.subList(1, group.size())) {
                    Tensor b = tensors.get(parent + other + suffix);
                    if (b != null && b.numel() == 1 && b.dtype() == DType.F32) {
                        float vb = b.bytes(arena).get(FloatFormats.FLOAT_LE, 0);
                        if (Float.floatToIntBits(va) != Float.floatToIntBits(vb)) {
                            problems.add(new Problem(b.name(), "is " + vb + " but " + name + " is " + va
                                    + ": engines fuse " + String.join("/", group) + " and use one of them for both"));
                        }
                    }
                }
            }
        }
    }

    /** The format the config declares, or null (none, several, or one moeport does not know: reported). */
    private static QuantFormat declaredFormat(Path folder, List<Problem> problems) {
        try {
            return QuantizedCheckpoint.declaredFormat(folder);
        } catch (MoeportException e) {
            problems.add(new Problem(folder.toString(), e.getMessage().startsWith(folder.toString()) ? e.getMessage().substring(folder.toString().length() + 2) : e.getMessage()));
            return null;
        }
    }

    /*
     * vLLM's Model Optimizer FP8 (quant_algo FP8) quantizes activations with a static input_scale
     * (model_executor/layers/quantization/modelopt.py at 00155cde, create_weights of ModelOptFp8LinearMethod and
     * ModelOptFp8MoEMethod): a linear layer fills it with torch.finfo(float32).min before loading and keeps its max
     * after, so without one it divides by a negative scale; a fused MoE fills it with 1.0 instead. Its
     * ModelOptFp8PbWoLinearMethod allocates weight_scale as [out/128, 1, in/128, 1], and BasevLLMParameter's
     * _assert_and_load (model_executor/parameter.py) asserts a loaded tensor has its parameter's shape.
     */
    public static final String FP8_LINEAR_WITHOUT_INPUT_SCALE = "is fp8 without an input_scale: vLLM's Model Optimizer FP8 linear then quantizes"
            + " its activations with the float32 minimum as scale (garbage); calibrate, or write --flavor compressed-tensors";
    public static final String FP8_EXPERT_WITHOUT_INPUT_SCALE = "is fp8 without an input_scale: vLLM's Model Optimizer FP8 MoE then uses 1.0,"
            + " clipping activations at 448 and flushing small ones; calibrate, or write --flavor compressed-tensors";

    /** Whether the quantization config is Model Optimizer's ({@code hf_quant_config.json}, or quant_method modelopt in config.json). */
    private static boolean isModelopt(Path folder) {
        Path config = folder.resolve("config.json");
        return Files.exists(folder.resolve("hf_quant_config.json"))
                || Files.exists(config) && read(config).path("quantization_config").path("quant_method").asText("").equals("modelopt");
    }

    /** Float scales engines read as f32 whatever their dtype: Model Optimizer writes F32, compressed-tensors the model's. */
    private static final Set<DType> FLOAT_SCALES = Set.of(DType.F32, DType.BF16, DType.F16);

    /**
     * Each quantized module's tensors against its format (the config's, else told by its tensors): the weight's dtype,
     * the scale's dtype and shape (Model Optimizer's, or compressed-tensors' channel column {@code [out, 1]}), one
     * f32 value for each per-tensor scale. Engines size their parameters from the config and the weight, and refuse
     * or misread a scale of another shape.
     */
    private static void checkLayouts(Map<String, Tensor> tensors, Set<String> quantized, QuantFormat declared, Map<String, QuantFormat> listedLayers,
                                     boolean vllmModelopt, List<Problem> problems) {
        for (String module : quantized) {
            Tensor weight = tensors.getOrDefault(module + ".weight_packed", tensors.get(module + ".weight"));
            Tensor scale = tensors.getOrDefault(module + ".weight_scale", tensors.get(module + ".weight_scale_inv"));
            if (weight == null || scale == null) {
                // GPT-OSS's _blocks/_scales, or a scale without its weight (reported as a missing sibling).
                continue;
            }
            Tensor global = tensors.getOrDefault(module + ".weight_scale_2", tensors.get(module + ".weight_global_scale"));
            QuantFormat format;
            try {
                format = declared != null ? declared : listedLayers.containsKey(module) ? listedLayers.get(module)
                        : QuantizedCheckpoint.inferFormat(weight, scale, global != null);
            } catch (MoeportException e) {
                problems.add(new Problem(weight.name(), "cannot tell its format: " + weight.describe() + " with scale " + scale.describe()));
                continue;
            }
            if (weight.dtype() != format.weightType()) {
                problems.add(new Problem(weight.name(), "is " + weight.dtype() + ", but a " + format.cliName() + " weight is " + format.weightType()));
                continue;
            }
            boolean floatScale = format.scaleType() == DType.F32;
            if (floatScale ? !FLOAT_SCALES.contains(scale.dtype()) : scale.dtype() != format.scaleType()) {
                problems.add(new Problem(scale.name(), "is " + scale.dtype() + ", but " + format.cliName() + " scales are "
                        + (floatScale ? "F32 (or BF16/F16)" : format.scaleType())));
            }
            Shape expected = format.scaleShape(format.decodedShape(weight.shape()));
            // One per-tensor scale may also stand for a whole stack of experts.
            boolean fits = QuantizedCheckpoint.isStoredFormOf(scale.shape(), expected)
                    || (format.scaleIsTensorScale() && scale.numel() == 1);
            if (!fits) {
                problems.add(new Problem(scale.name(), "has shape " + scale.shape() + ", but " + format.cliName() + " of weight " + weight.shape()
                        + " has " + expected));
            }
            if (vllmModelopt && format == QuantFormat.FP8_PB && fits && !scale.shape().equals(QuantizedCheckpoint.blockGrid(expected))) {
                problems.add(new Problem(scale.name(), "has shape " + scale.shape() + ": vLLM's Model Optimizer FP8_PB_WO loader allocates "
                        + QuantizedCheckpoint.blockGrid(expected) + " (Model Optimizer's export shape) and asserts the stored shape equals it"));
            }
            if (vllmModelopt && format == QuantFormat.FP8 && !tensors.containsKey(module + ".input_scale")) {
                problems.add(new Problem(module, EXPERT.matcher(module).matches() || weight.rank() == 3 ? FP8_EXPERT_WITHOUT_INPUT_SCALE : FP8_LINEAR_WITHOUT_INPUT_SCALE));
            }
            if (format.hasScale2() && global == null) {
                problems.add(new Problem(module, "has no per-tensor scale (weight_scale_2 or weight_global_scale), which " + format.cliName() + " needs"));
            }
            for (String suffix : List.of(".weight_scale_2", ".weight_global_scale", ".input_scale", ".input_global_scale")) {
                Tensor t = tensors.get(module + suffix);
                if (t != null && (t.dtype() != DType.F32 && t.dtype() != DType.BF16 || t.numel() != 1)) {
                    problems.add(new Problem(t.name(), "is " + t.describe() + ", but a per-tensor scale is one F32 value"));
                }
            }
        }
    }

    /** Experts of one layer where some have a scale tensor that others (whose weight is there) lack. */
    private static void checkExpertSiblings(Map<String, Tensor> tensors, List<Problem> problems) {
        // "<prefix>.experts.*<rest>" -> expert numbers that have it
        Map<String, Set<Integer>> have = new TreeMap<>();
        for (String name : tensors.keySet()) {
            Matcher m = EXPERT.matcher(name);
            if (m.matches()) {
                String key = m.group(1) + "*" + m.group(3);
                have.computeIfAbsent(key, k -> new TreeSet<>()).add(Integer.parseInt(m.group(2)));
            }
        }
        for (var e : have.entrySet()) {
            String key = e.getKey();
            String suffix = scaleSuffix(key);
            if (suffix == null || suffix.equals("_scales")) {
                continue;
            }
            String module = key.substring(0, key.length() - suffix.length());
            // compressed-tensors' NVFP4 weight is weight_packed
            Set<Integer> withWeight = have.getOrDefault(module + ".weight", have.getOrDefault(module + ".weight_packed", Set.of()));
            for (int expert : withWeight) {
                if (!e.getValue().contains(expert)) {
                    problems.add(new Problem(key.replace("*", Integer.toString(expert)), "is missing, but " + e.getValue().size()
                            + " sibling expert(s) have it (an engine reads a missing scale as zero or fails)"));
                }
            }
        }
    }
}
