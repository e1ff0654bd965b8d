package dev.moeport.plan;

import java.util.List;

/**
 * Where a per-tensor scale's amax comes from. Tensors split from one fused source (q/k/v of a fused
 * QKV, gate/up of a gated fc1) share the fused tensor's amax, so that they carry equal global scales;
 * the executor computes each {@code key} once.
 */
public sealed interface AmaxSource {
    /** A calibrated amax from the checkpoint (ModelOpt's {@code weight_quantizer._amax}). */
    record Calibrated(float amax) implements AmaxSource {}

    /** The largest |x| over these pieces, computed once per {@code key}. */
    record Computed(String key, List<Piece> pieces) implements AmaxSource {}
}
