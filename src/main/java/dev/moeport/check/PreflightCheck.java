package dev.moeport.check;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.moeport.MoeportException;
import dev.moeport.format.Checkpoint;
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

    /** Every problem of {@code ckpt} (its folder {@code folder} holds the config files), sorted by tensor name. */
    public static List<Problem> run(Checkpoint ckpt, Path folder) {
        List<Problem> problems = new ArrayList<>();
        Map<String, Tensor> tensors = ckpt.tensors();
        Set<String> quantized = quantizedModules(tensors.keySet());
        List<String> excluded = checkConfig(folder, quantized, problems);
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
    private static List<String> checkConfig(Path folder, Set<String> quantized, List<Problem> problems) {
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
            case "modelopt" -> q.path("quant_algo").asText("").contains("FP4") || q.path("quant_algo").asText("").startsWith("W4")
                    ? List.of("quant_algo", "kv_cache_quant_algo", "group_size", "exclude_modules")
                    : List.of("quant_algo", "kv_cache_quant_algo", "exclude_modules");
            // transformers' fine-grained FP8 (DeepSeek-V3's layout): blocks need their size.
            case "fp8" -> quantized.isEmpty() ? List.of() : List.of("weight_block_size");
            default -> List.of();
        };
        for (String key : required) {
            if (!q.has(key)) {
                problems.add(new Problem(file, "quantization config has no '" + key + "' (required for quant_method " + method + ")"));
            }
        }
        for (String key : List.of("exclude_modules", "modules_to_not_convert", "ignore")) {
            q.path(key).forEach(e -> excluded.add(e.asText()));
        }
        return excluded;
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
