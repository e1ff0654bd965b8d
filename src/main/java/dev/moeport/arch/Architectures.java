package dev.moeport.arch;

import dev.moeport.MoeportException;
import java.util.List;

/** The architectures moeport maps, and the choice of one from a config. */
public final class Architectures {
    private static final List<Architecture> ALL = List.of(NemotronH.ARCHITECTURE, MoeTransformers.QWEN3_MOE, MoeTransformers.MIXTRAL,
            MoeTransformers.DEEPSEEK_V3, MoeTransformers.GPT_OSS);

    private Architectures() {}

    public static List<Architecture> all() {
        return ALL;
    }

    /** The architecture of {@code config}, from its {@code architectures} entry, or null when it is none moeport maps. */
    public static Architecture find(ModelConfig config) {
        return ALL.stream().filter(a -> a.hfClasses().contains(config.architecture())).findFirst().orElse(null);
    }

    /** The architecture named by the user ({@code --arch}), else the one of {@code config}. */
    public static Architecture of(ModelConfig config, String override) {
        return override != null ? byName(override) : detect(config);
    }

    /** The architecture of {@code config}, from its {@code architectures} entry. */
    public static Architecture detect(ModelConfig config) {
        Architecture found = find(config);
        if (found != null) {
            return found;
        }
        String name = config.architecture();
        throw new MoeportException(config.file() + ": architecture " + (name == null ? "(none given)" : "'" + name + "'")
                + " is not supported; supported: " + supportedList());
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
