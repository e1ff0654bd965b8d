package dev.moeport.arch;

import java.util.List;

/**
 * transformers 5's in-memory names, which {@code save_pretrained(save_original_format=False)} writes:
 * the experts of a layer fused into 3-D tensors ({@code mlp.experts.gate_up_proj [E, 2I, H]} with each
 * expert's gate rows first, {@code down_proj [E, H, I]}), and for some models other prefixes
 * (NemotronH's {@code model.} for {@code backbone.}, Mixtral's {@code mlp.} for {@code block_sparse_moe.}).
 * The rule tables use the per-expert ("original") names; this maps between the two.
 *
 * @param renames name rewrites between the forms
 * @param experts fused expert tensors, relative to the HF layer prefix in per-expert naming
 */
public record HfFusedLayout(List<Rename> renames, List<Experts> experts) {

    /** {@code fusedPattern} (a regex) rewritten with {@code toOriginal} gives the original name; {@code originalPattern} and {@code toFused} go back. */
    public record Rename(String fusedPattern, String toOriginal, String originalPattern, String toFused) {}

    /**
     * One fused tensor and the per-expert tensors it stacks: expert e's slab is their rows, in order.
     *
     * @param fused e.g. {@code mlp.experts.gate_up_proj}, in original naming
     * @param perExpert e.g. {@code mlp.experts.{e}.gate_proj.weight}, {@code mlp.experts.{e}.up_proj.weight}
     */
    public record Experts(String fused, List<String> perExpert) {}

    /** Gate and up fused as {@code gate_up_proj}, down as {@code down_proj}, under {@code prefix} ({@code mlp.experts}). */
    static HfFusedLayout gated(String prefix, String gate, String up, String down, List<Rename> renames) {
        return new HfFusedLayout(renames, List.of(
                new Experts(prefix + ".gate_up_proj", List.of(prefix + ".{e}." + gate + ".weight", prefix + ".{e}." + up + ".weight")),
                new Experts(prefix + ".down_proj", List.of(prefix + ".{e}." + down + ".weight"))));
    }

    /** An architecture whose checkpoints have no other layout. */
    static final HfFusedLayout NONE = new HfFusedLayout(List.of(), List.of());
}
