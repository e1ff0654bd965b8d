package dev.moeport.convert;

import dev.moeport.MoeportException;
import dev.moeport.format.torchdist.TorchDistCheckpoint;
import dev.moeport.quant.QuantFormat;
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
 * The weight quantizers' attributes ({@code num_bits}, {@code axis}, {@code block_sizes}) name the format.
 *
 * @param format what the weight quantizers quantize to
 * @param version the Model Optimizer version that wrote it
 */
public record ModeloptState(QuantFormat format, String version) {
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
        return new ModeloptState(found.iterator().next(), version);
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
     * The format of a weight quantizer's attributes, after Model Optimizer's presets
     * (modelopt_recipes/configs/numerics/*.yaml): FP8 E4M3 per tensor ({@code axis} None) or per
     * channel ({@code axis} 0) or in 128x128 blocks; NVFP4 (E2M1, 16-element blocks, E4M3 scales);
     * MXFP4 / MXFP8 (32-element blocks, E8M0 scales); INT8 per channel; INT4 in 128-element blocks.
     * Null for anything else.
     */
    static QuantFormat formatOf(Map<?, ?> a) {
        String bits = bits(a.get("num_bits"));
        Object axis = a.get("axis");
        Map<?, ?> blocks = a.get("block_sizes") instanceof Map<?, ?> b ? b : null;
        Object last = blocks == null ? null : blocks.get(-1L);
        Object secondLast = blocks == null ? null : blocks.get(-2L);
        String scaleBits = blocks == null ? null : bits(blocks.get("scale_bits"));
        if (bits == null || a.containsKey("sequential")) {
            return null;
        }
        return switch (bits) {
            case "e4m3" -> blocks == null ? (axis == null ? QuantFormat.FP8 : axis.equals(0L) ? QuantFormat.FP8_PC : null)
                    : Long.valueOf(128).equals(last) && Long.valueOf(128).equals(secondLast) ? QuantFormat.FP8_PB
                    : Long.valueOf(32).equals(last) && "e8m0".equals(scaleBits) ? QuantFormat.MXFP8 : null;
            case "e2m1" -> blocks == null ? null
                    : Long.valueOf(16).equals(last) && "e4m3".equals(scaleBits) ? QuantFormat.NVFP4
                    : Long.valueOf(32).equals(last) && "e8m0".equals(scaleBits) ? QuantFormat.MXFP4 : null;
            case "8" -> blocks == null && Long.valueOf(0).equals(axis) ? QuantFormat.INT8_WO : null;
            case "4" -> blocks != null && Long.valueOf(128).equals(last) && secondLast == null ? QuantFormat.INT4_G128 : null;
            default -> null;
        };
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
