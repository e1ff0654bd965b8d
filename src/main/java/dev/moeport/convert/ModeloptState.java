package dev.moeport.convert;

import dev.moeport.MoeportException;
import dev.moeport.format.torchdist.TorchDistCheckpoint;
import dev.moeport.quant.QuantFormat;
import dev.moeport.util.Glob;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * The quantization recipe of a Model Optimizer-quantized Megatron checkpoint. Megatron-LM saves
 * {@code modelopt_state} beside the weights as a torch_dist checkpoint of its own,
 * {@code iter_NNNNNNN/modelopt_state/} (megatron/core/post_training/modelopt/checkpointing.py,
 * save_sharded_modelopt_state), whose common state is Model Optimizer's
 * {@code {"modelopt_state_dict": [(mode, {"config": ..., "metadata": ...}), ...], "modelopt_version": ...}}
 * (modelopt/torch/opt/conversion.py, modelopt_state). The {@code quantize} mode's config is a
 * {@code QuantizeConfig}: {@code quant_cfg} is a list of {@code {"quantizer_name", "cfg", "enable"}} entries
 * (0.47) or, from older versions, a dict of quantizer name to attributes (modelopt/torch/quantization/config.py).
 * The weight quantizers' attributes ({@code num_bits}, {@code axis}, {@code block_sizes}) name the format;
 * the entries, in order, say which modules' weight quantizers are enabled.
 *
 * @param format what the weight quantizers quantize to
 * @param version the Model Optimizer version that wrote it
 * @param rules the {@code quant_cfg} entries that enable or disable quantizers, in order (the last match decides)
 */
public record ModeloptState(QuantFormat format, String version, List<Rule> rules) {

    /** One {@code quant_cfg} entry: quantizers whose name {@code pattern} matches are enabled or not. */
    public record Rule(Glob pattern, boolean enable) {}

    /**
     * Whether the recipe quantizes the weight of the Megatron module {@code module}
     * ({@code decoder.layers.0.self_attention.linear_qkv}): its {@code weight_quantizer} is enabled by the
     * last entry that matches it, and a quantizer no entry names keeps Model Optimizer's default, enabled.
     */
    public boolean quantizes(String module) {
        String quantizer = module + ".weight_quantizer";
        boolean enabled = true;
        for (Rule r : rules) {
            if (r.pattern().matches(quantizer)) {
                enabled = r.enable();
            }
        }
        return enabled;
    }
    /** The folder name Megatron-LM saves it under, inside the iteration folder. */
    public static final String FOLDER = "modelopt_state";
    private static final Set<String> QUANTIZE_MODES = Set.of("quantize", "real_quantize");

    /** The recipe saved with the checkpoint at {@code checkpoint}, or null when it has no {@code modelopt_state} or no quantization. */
    public static ModeloptState beside(Path checkpoint) {
        Path folder = folderOf(checkpoint);
        if (folder == null) {
            return null;
        }
        Object common = TorchDistCheckpoint.commonState(folder);
        return common == null ? null : parse(common, folder);
    }

    private static Path folderOf(Path checkpoint) {
        if (!Files.isDirectory(checkpoint)) {
            return null;
        }
        Path data = TorchDistCheckpoint.recognizes(checkpoint) ? TorchDistCheckpoint.dataFolder(checkpoint) : checkpoint;
        Path folder = data.resolve(FOLDER);
        return Files.isDirectory(folder) ? folder : null;
    }

    /** The recipe in Model Optimizer's {@code modelopt_state} dict {@code state}; {@code where} names its folder. */
    static ModeloptState parse(Object state, Path where) {
        if (!(state instanceof Map<?, ?> map) || !(map.get("modelopt_state_dict") instanceof List<?> modes)) {
            throw new MoeportException(where + ": not Model Optimizer's modelopt_state (no modelopt_state_dict list)");
        }
        String version = map.get("modelopt_version") instanceof String v ? v : "unknown";
        Object quantCfg = null;
        for (Object mode : modes) {
            if (mode instanceof List<?> pair && pair.size() == 2 && pair.get(0) instanceof String name && QUANTIZE_MODES.contains(name)
                    && pair.get(1) instanceof Map<?, ?> modeState && modeState.get("config") instanceof Map<?, ?> config) {
                quantCfg = config.get("quant_cfg");
            }
        }
        if (quantCfg == null) {
            return null;
        }
        Set<String> formats = new LinkedHashSet<>();
        Set<QuantFormat> found = new LinkedHashSet<>();
        for (Map<?, ?> attributes : weightQuantizerAttributes(quantCfg, where)) {
            QuantFormat f = formatOf(attributes);
            formats.add(f == null ? describe(attributes) : f.cliName());
            if (f != null) {
                found.add(f);
            }
        }
        if (formats.isEmpty()) {
            return null;
        }
        if (formats.size() > 1 || found.isEmpty()) {
            throw new MoeportException(where + ": Model Optimizer " + version + " quantized the weights as " + String.join(" and ", formats)
                    + ", which moeport does not write (it writes one of " + String.join(", ", List.of(QuantFormat.values()).stream()
                    .map(QuantFormat::cliName).toList()) + " for every quantized weight); nothing written");
        }
        return new ModeloptState(found.iterator().next(), version, rules(quantCfg));
    }

    /** The HF modules among {@code tensors} made from a Megatron weight whose quantizer the recipe leaves disabled. */
    public List<String> unquantizedModules(List<MappedTensor> tensors) {
        List<String> modules = new java.util.ArrayList<>();
        for (MappedTensor t : tensors) {
            if (QuantSelection.isLinearWeight(t.name(), t.rank())
                    && t.sources().stream().map(ModeloptState::moduleOf).anyMatch(m -> m != null && !quantizes(m))) {
                modules.add(QuantSelection.module(t.name()));
            }
        }
        return modules;
    }

    /** The module of a Megatron weight name ({@code ...linear_fc1.weight}, a grouped expert's {@code ...linear_fc1.weight3}), or null. */
    private static String moduleOf(String source) {
        int at = source.lastIndexOf(".weight");
        return at > 0 && source.substring(at + ".weight".length()).chars().allMatch(Character::isDigit) ? source.substring(0, at) : null;
    }

    /**
     * The entries that turn quantizers on or off, in order: an {@code enable} flag, or attributes
     * without one (implicitly enabled, modelopt/torch/quantization/config.py QuantizerCfgEntry). Entries
     * for a parent class (BatchNorm, LeakyReLU) concern no linear weight and are left out. In the older
     * dict form, {@code default} applies first to every quantizer.
     */
    private static List<Rule> rules(Object quantCfg) {
        List<Rule> rules = new java.util.ArrayList<>();
        if (quantCfg instanceof List<?> entries) {
            for (Object entry : entries) {
                if (entry instanceof Map<?, ?> e && e.get("quantizer_name") instanceof String name && e.get("parent_class") == null) {
                    Boolean enable = enabled(e.get("enable"), e.get("cfg"));
                    if (enable != null) {
                        rules.add(new Rule(Glob.of(name), enable));
                    }
                }
            }
        } else if (quantCfg instanceof Map<?, ?> legacy) {
            if (legacy.get("default") instanceof Map<?, ?> d && enabled(d.get("enable"), d) != null) {
                rules.add(new Rule(Glob.of("*"), enabled(d.get("enable"), d)));
            }
            legacy.forEach((name, cfg) -> {
                Boolean enable = cfg instanceof Map<?, ?> m ? enabled(m.get("enable"), m) : null;
                if (name instanceof String n && !n.equals("default") && !n.startsWith("nn.") && enable != null) {
                    rules.add(new Rule(Glob.of(n), enable));
                }
            });
        }
        return List.copyOf(rules);
    }

    /** An entry's effect: its {@code enable} flag, else enabled when it gives attributes, else none. */
    private static Boolean enabled(Object enable, Object cfg) {
        if (enable instanceof Boolean b) {
            return b;
        }
        return cfg instanceof Map<?, ?> m && m.keySet().stream().anyMatch(k -> !"enable".equals(k)) || cfg instanceof List<?> ? Boolean.TRUE : null;
    }

    /**
     * The attribute dicts of every enabled weight quantizer entry: {@code *weight_quantizer} and any
     * narrower pattern ending in it. A list of dicts as {@code cfg} (sequential quantizers, W4A8) is kept
     * as it is, to be refused by name.
     */
    private static List<Map<?, ?>> weightQuantizerAttributes(Object quantCfg, Path where) {
        List<Map<?, ?>> out = new java.util.ArrayList<>();
        if (quantCfg instanceof List<?> entries) {
            for (Object entry : entries) {
                if (entry instanceof Map<?, ?> e && e.get("quantizer_name") instanceof String name) {
                    add(out, name, e.get("cfg"), e.get("enable"));
                }
            }
        } else if (quantCfg instanceof Map<?, ?> legacy) {
            legacy.forEach((name, cfg) -> {
                if (name instanceof String n) {
                    add(out, n, cfg, cfg instanceof Map<?, ?> m ? m.get("enable") : null);
                }
            });
        } else {
            throw new MoeportException(where + ": modelopt_state's quant_cfg is neither a list nor a dict");
        }
        return out;
    }

    private static void add(List<Map<?, ?>> out, String name, Object cfg, Object enable) {
        if (!name.endsWith("weight_quantizer") || Boolean.FALSE.equals(enable) || cfg == null) {
            return;
        }
        if (cfg instanceof Map<?, ?> attributes) {
            if (!Boolean.FALSE.equals(attributes.get("enable"))) {
                out.add(attributes);
            }
        } else {
            out.add(Map.of("sequential", cfg));
        }
    }

    /**
     * The format of a weight quantizer's attributes, as each format states them ({@link QuantFormat.Quantizer}):
     * FP8 E4M3 per tensor ({@code axis} None) or per channel ({@code axis} 0) or in 128x128 blocks; NVFP4 (E2M1,
     * 16-element blocks, E4M3 scales); MXFP4 / MXFP8 (32-element blocks, E8M0 scales); INT8 per channel; INT4 in
     * 128-element blocks. Null for anything else.
     */
    static QuantFormat formatOf(Map<?, ?> a) {
        String bits = bits(a.get("num_bits"));
        if (bits == null || a.containsKey("sequential")) {
            return null;
        }
        Map<?, ?> blocks = a.get("block_sizes") instanceof Map<?, ?> b ? b : null;
        return QuantFormat.fromModeloptQuantizer(bits, a.get("axis"), blocks, blocks == null ? null : bits(blocks.get("scale_bits")));
    }

    /** {@code num_bits} / {@code scale_bits} as {@code e4m3} (from a tuple (4, 3) or the string "E4M3") or {@code 8}. */
    private static String bits(Object value) {
        return switch (value) {
            case Long n -> n.toString();
            case List<?> em when em.size() == 2 -> "e" + em.get(0) + "m" + em.get(1);
            case String s -> s.toLowerCase(java.util.Locale.ROOT);
            case null, default -> null;
        };
    }

    /** A weight quantizer's attributes as the one line of an error message. */
    private static String describe(Map<?, ?> a) {
        if (a.containsKey("sequential")) {
            return "sequential quantizers " + a.get("sequential");
        }
        return "num_bits=" + a.get("num_bits") + (a.get("axis") != null ? " axis=" + a.get("axis") : "")
                + (a.get("block_sizes") != null ? " block_sizes=" + a.get("block_sizes") : "");
    }
}
