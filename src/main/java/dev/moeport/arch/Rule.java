package dev.moeport.arch;

import dev.moeport.tensor.Shape;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.SequencedMap;

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
 * @param shapes the shape of each HF tensor, from the config (one for all when they share it); empty until
 *     {@link #shape} declares it, which every row of a table does ({@code ArchitecturesTest} checks)
 * @param torchDistSections the row sections under which Megatron-Core's torch_dist holds the MCore tensor, in order,
 *     with their sizes ({@link #torchDistSplit}); empty when it holds it whole
 */
public record Rule(LayerKind kind, List<String> mcore, List<String> hf, Transform transform, boolean isOptional,
                   boolean keepsDtype, List<TensorShape> shapes, Map<String, String> torchDistSections) {

    /** A row: {@code mcore} lists alternatives separated by {@code |}, {@code hf} several names separated by {@code ,}. */
    public static Rule of(LayerKind kind, String mcore, String hf) {
        return new Rule(kind, split(mcore, "\\|"), split(hf, ","), new Transform.Copy(), false, false, List.of(), Map.of());
    }

    public Rule with(Transform t) {
        return new Rule(kind, mcore, hf, t, isOptional, keepsDtype, shapes, torchDistSections);
    }

    public Rule optional() {
        return new Rule(kind, mcore, hf, transform, true, keepsDtype, shapes, torchDistSections);
    }

    public Rule keepDtype() {
        return new Rule(kind, mcore, hf, transform, isOptional, true, shapes, torchDistSections);
    }

    /** The same row under other HF names (a multimodal wrapper's). */
    Rule withHf(List<String> names) {
        return new Rule(kind, mcore, names, transform, isOptional, keepsDtype, shapes, torchDistSections);
    }

    /**
     * Megatron-Core's sharded state dict saves the MCore tensor as one torch_dist key per row section,
     * {@code <name>.<section>} (ssm/utils.py {@code _split_tensor_factory}), so that each section reshards across
     * tensor-parallel sizes on its own: {@code "z x: d_inner; B C: groups*state; dt: heads"}, sections in row order.
     */
    public Rule torchDistSplit(String sections) {
        return new Rule(kind, mcore, hf, transform, isOptional, keepsDtype, shapes, TensorShape.namedSizes(sections));
    }

    /** The torch_dist sections' rows under {@code config}, in order; empty when the tensor is saved whole. */
    public SequencedMap<String, Long> torchDistRows(ModelConfig config) {
        SequencedMap<String, Long> rows = new LinkedHashMap<>();
        torchDistSections.forEach((section, size) -> rows.put(section, TensorShape.sizeOf(size, config)));
        return rows;
    }

    /**
     * The HF tensors' shapes in {@link TensorShape}'s notation ({@code "moe_intermediate_size, hidden_size"}):
     * one for every HF tensor of the row, or one per HF tensor in order. For fused experts, the shape of the
     * fused tensor.
     */
    public Rule shape(String... perTensor) {
        if (perTensor.length != 1 && perTensor.length != hf.size()) {
            throw new IllegalArgumentException(describe() + ": " + perTensor.length + " shapes for " + hf.size() + " tensors");
        }
        return new Rule(kind, mcore, hf, transform, isOptional, keepsDtype, Arrays.stream(perTensor).map(TensorShape::parse).toList(),
                torchDistSections);
    }

    /** The declared shape of HF tensor {@code index} of the row, or null when the row declares none. */
    public TensorShape shapeOf(int index) {
        return shapes.isEmpty() ? null : shapes.get(shapes.size() == 1 ? 0 : index);
    }

    /** Refuses HF tensor {@code index} of the row (named {@code tensor} in the message) unless its shape is the declared one. */
    public void checkShape(int index, String tensor, Shape actual, ModelConfig config) {
        TensorShape expected = shapeOf(index);
        if (expected != null) {
            expected.check(tensor, actual, config);
        }
    }

    public boolean perExpert() {
        return hf.stream().anyMatch(n -> n.contains("{e}")) || mcore.stream().anyMatch(n -> n.contains("{e}"));
    }

    /** One HF tensor holds every expert (GPT-OSS's fused experts): {@code {e}} on the MCore side only. */
    public boolean fusedExperts() {
        return mcore.stream().anyMatch(n -> n.contains("{e}")) && hf.stream().noneMatch(n -> n.contains("{e}"));
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
