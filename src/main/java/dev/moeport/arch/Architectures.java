package dev.moeport.arch;

import dev.moeport.MoeportException;
import java.util.List;

/** The architectures moeport maps, and the choice of one from a config. */
public final class Architectures {
    private static final List<Architecture> ALL = List.of(NemotronH.ARCHITECTURE, MoeTransformers.QWEN3_MOE, MoeTransformers.MIXTRAL,
            MoeTransformers.DEEPSEEK_V3, MoeTransformers.GPT_OSS, MoeTransformers.OLMOE, MoeTransformers.MINIMAX_M2,
            MoeTransformers.GLM4_MOE, MoeTransformers.ERNIE4_5_MOE, MoeTransformers.QWEN3_NEXT, MoeTransformers.QWEN3_5_MOE,
            MoeTransformers.LLAMA4);

    /** The multimodal classes whose language model is one of {@link #ALL}. */
    private static final List<Architecture> WRAPPED = List.of(MoeTransformers.LLAMA4_MULTIMODAL, MoeTransformers.QWEN3_5_MOE_MULTIMODAL);

    private Architectures() {}

    public static List<Architecture> all() {
        return ALL;
    }

    /** The multimodal wrappers of {@code text}'s language model. */
    private static List<Architecture> wrappersOf(Architecture text) {
        return WRAPPED.stream().filter(w -> w.name().equals(text.name())).toList();
    }

    /**
     * The architecture of {@code config}, from its {@code architectures} entry, or null when it is none moeport maps.
     * A multimodal wrapper's is its language model's, under the wrapper's names ({@link Architecture#wrappedBy}).
     */
    public static Architecture find(ModelConfig config) {
        String name = config.architecture();
        return name == null ? null
                : java.util.stream.Stream.concat(ALL.stream(), WRAPPED.stream()).filter(a -> a.hfClasses().contains(name) || a.name().equals(name))
                        .findFirst().orElse(null);
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
        if (named != null && !named.name().equals(chosen.name())) {
            throw new MoeportException("--arch " + override + " contradicts " + config.file() + ", which describes " + named.name());
        }
        // A wrapper's config keeps its names: --arch llama4 of a Llama4ForConditionalGeneration is that wrapper's.
        return named != null && named.wrapper() != null ? named : chosen;
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
        for (Architecture a : java.util.stream.Stream.concat(ALL.stream(), WRAPPED.stream()).toList()) {
            if (a.name().equalsIgnoreCase(name) || a.hfClasses().contains(name)) {
                return a;
            }
        }
        throw new MoeportException("unknown architecture '" + name + "'; supported: " + supportedList());
    }

    public static String supportedList() {
        return String.join(", ", ALL.stream().map(a -> a.name() + " (" + String.join(", ", classes(a)) + ")").toList());
    }

    /** The HF classes of {@code text}: its own, then those of its multimodal wrappers. */
    public static List<String> classes(Architecture text) {
        return java.util.stream.Stream.concat(text.hfClasses().stream(), wrappersOf(text).stream().flatMap(w -> w.hfClasses().stream())).toList();
    }
}
