package dev.moeport.arch;

import java.util.List;

/**
 * A multimodal class that holds a text model moeport maps, as the published checkpoints of Llama 4 and Qwen3.5
 * are: its config.json nests the text model's config under {@code configKey}, the text model's tensors lie under
 * other prefixes, and the vision tower and projector beside them. moeport maps the language model; the tensors
 * under {@code carried} are copied untouched by the commands that write Hugging Face checkpoints (and never
 * quantized, as Model Optimizer leaves everything outside the language model unquantized), and reported by import.
 *
 * @param hfClass the {@code architectures} entry of the wrapper's config.json
 * @param configKey the key of the text model's config in it
 * @param prefixes how the text model's names become the wrapper's: the first prefix that a name starts with is
 *     replaced; names no prefix matches stay as they are
 * @param carried prefixes of the tensors outside the language model
 */
public record Wrapper(String hfClass, String configKey, List<Prefix> prefixes, List<String> carried) {

    /** Text-model names starting with {@code text} start with {@code wrapped} in the wrapper. */
    public record Prefix(String text, String wrapped) {}

    /** {@code name} of the text model as the wrapper names it. */
    public String wrap(String name) {
        for (Prefix p : prefixes) {
            if (name.startsWith(p.text())) {
                return p.wrapped() + name.substring(p.text().length());
            }
        }
        return name;
    }

    /** A module glob of the text model as a glob of the wrapper's modules; globs that start with a wildcard match there already. */
    String wrapGlob(String glob) {
        return glob.startsWith("*") ? glob : wrap(glob);
    }

    /** Whether {@code name} is a tensor outside the language model (vision tower, projector). */
    public boolean carries(String name) {
        return carried.stream().anyMatch(name::startsWith);
    }

    /** The carried prefixes as globs: {@code vision_model.*, multi_modal_projector.*}. */
    public String carriedList() {
        return String.join(", ", carried.stream().map(p -> p + "*").toList());
    }
}
