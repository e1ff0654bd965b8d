package dev.moeport.arch;

import java.util.Arrays;
import java.util.List;

/**
 * One row of an architecture's mapping table: a Megatron-Core tensor, the Hugging Face tensor(s) it
 * becomes, and the {@link Transform} between them. Names of layer rules are relative to the layer
 * prefixes ({@code decoder.layers.{L}.} / e.g. {@code backbone.layers.{L}.}); {@code {e}} stands for
 * an expert number and makes the row apply once per routed expert.
 *
 * @param kind the layer kind the row applies to; null for model-level tensors (embeddings, final norm)
 * @param mcore accepted MCore names, the first being the one import writes (e.g. the TE-fused norm)
 * @param hf the HF names, in the transform's order
 * @param isOptional absent from the input is fine (a feature some checkpoints have)
 * @param keepsDtype never cast by {@code --dtype} (Mamba's A_log, D, dt_bias; the router's expert bias)
 * @param shape expected shape of each HF tensor as config keys (null: not checked)
 */
public record Rule(LayerKind kind, List<String> mcore, List<String> hf, Transform transform, boolean isOptional,
                   boolean keepsDtype, List<String> shape) {

    /** A row: {@code mcore} lists alternatives separated by {@code |}, {@code hf} several names separated by {@code ,}. */
    public static Rule of(LayerKind kind, String mcore, String hf) {
        return new Rule(kind, split(mcore, "\\|"), split(hf, ","), new Transform.Copy(), false, false, null);
    }

    public Rule with(Transform t) {
        return new Rule(kind, mcore, hf, t, isOptional, keepsDtype, shape);
    }

    public Rule optional() {
        return new Rule(kind, mcore, hf, transform, true, keepsDtype, shape);
    }

    public Rule keepDtype() {
        return new Rule(kind, mcore, hf, transform, isOptional, true, shape);
    }

    /** Expected HF shape, one config key (or integer) per dimension. */
    public Rule shape(String... dims) {
        return new Rule(kind, mcore, hf, transform, isOptional, keepsDtype, List.of(dims));
    }

    public boolean perExpert() {
        return hf.stream().anyMatch(n -> n.contains("{e}")) || mcore.stream().anyMatch(n -> n.contains("{e}"));
    }

    /** A one-line description for error messages. */
    public String describe() {
        return String.join(" | ", mcore) + " -> " + String.join(", ", hf) + " (" + transform.getClass().getSimpleName().toLowerCase(java.util.Locale.ROOT)
                + (kind == null ? "" : ", " + kind.label() + " layers") + ")";
    }

    private static List<String> split(String text, String separator) {
        return Arrays.stream(text.split(separator)).map(String::strip).toList();
    }
}
