package dev.moeport.arch;

import dev.moeport.MoeportException;
import java.util.List;

/** The architectures moeport maps, and the choice of one from a config. */
public final class Architectures {
    private static final List<Architecture> ALL = List.of(NemotronH.ARCHITECTURE, MoeTransformers.QWEN3_MOE, MoeTransformers.MIXTRAL,
            MoeTransformers.DEEPSEEK_V3, MoeTransformers.GPT_OSS, MoeTransformers.OLMOE, MoeTransformers.MINIMAX_M2,
            MoeTransformers.GLM4_MOE, MoeTransformers.ERNIE4_5_MOE, MoeTransformers.QWEN3_NEXT, MoeTransformers.QWEN3_5_MOE,
            MoeTransformers.LLAMA4);

    private Architectures() {}

    public static List<Architecture> all() {
        return ALL;
    }

    /** The architecture of {@code config}, from its {@code architectures} entry, or null when it is none moeport maps. */
    public static Architecture find(ModelConfig config) {
        String name = config.architecture();
        return name == null ? null
                : ALL.stream().filter(a -> a.hfClasses().contains(name) || a.name().equals(name)).findFirst().orElse(null);
    }

    /**
     * The architecture named by the user ({@code --arch}), else the one of {@code config}. An {@code --arch}
     * that contradicts an architecture the config names is refused: the tensors would be mapped wrongly.
     */
    public static Architecture of(ModelConfig config, String override) {
        if (override == null) {
            return detect(config);
        }
        Architecture chosen = byName(override);
        Architecture named = find(config);
        if (named != null && named != chosen) {
            throw new MoeportException("--arch " + override + " contradicts " + config.file() + ", which describes " + named.name());
        }
        return chosen;
    }

    /** The architecture of {@code config}, from its {@code architectures} entry. */
    public static Architecture detect(ModelConfig config) {
        Architecture found = find(config);
        if (found != null) {
            return found;
        }
        String name = config.architecture();
        if (name == null) {
            throw new MoeportException(config.file() + ": names no architecture (no \"architectures\" nor \"model_type\"); give --arch, one of: "
                    + supportedList());
        }
        throw new MoeportException(config.file() + ": architecture '" + name + "' is not supported; supported: " + supportedList());
    }

    /** The architecture named {@code name} ({@code nemotron_h} or its HF class name). */
    public static Architecture byName(String name) {
        for (Architecture a : ALL) {
            if (a.name().equalsIgnoreCase(name) || a.hfClasses().contains(name)) {
                return a;
            }
        }
        throw new MoeportException("unknown architecture '" + name + "'; supported: " + supportedList());
    }

    public static String supportedList() {
        return String.join(", ", ALL.stream().map(a -> a.name() + " (" + String.join(", ", a.hfClasses()) + ")").toList());
    }
}
