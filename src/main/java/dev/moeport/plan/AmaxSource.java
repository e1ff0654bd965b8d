package dev.moeport.plan;

import java.util.List;

/**
 * Where a quantize job's per-tensor scale comes from (fp8, nvfp4), stated in the plan so that dry runs and
 * the executor's schedule see it. Tensors split from one fused source (q/k/v of a fused QKV, gate/up of a
 * gated fc1) carry one {@link Shared} amax, so that engines fusing them again find equal scales.
 */
public sealed interface AmaxSource {
    /** The format has no per-tensor scale: every scale comes from its own row or block. */
    record None() implements AmaxSource {}

    /** A calibrated amax from the checkpoint (ModelOpt's {@code weight_quantizer._amax}). */
    record Calibrated(float amax) implements AmaxSource {}

    /** The largest |x| of the job's own weight, read by the job before it quantizes. */
    record Own() implements AmaxSource {}

    /** The largest |x| of each expert of a stacked weight, each expert scaled on its own (fp8's per-expert {@code weight_scale}). */
    record PerExpert() implements AmaxSource {}

    /** An amax several jobs share, computed once, before any of them runs. */
    record Shared(SharedAmax amax) implements AmaxSource {}

    /**
     * The largest |x| over {@code pieces}: the whole fused tensor, or all the siblings that must carry one scale.
     *
     * @param key names the siblings together ({@code ...q_proj+...k_proj+...v_proj}); one amax per key
     */
    record SharedAmax(String key, List<Piece> pieces) {
        /** Bytes read from the input to compute it. */
        public long inputBytes() {
            return pieces.stream().mapToLong(Piece::inputBytes).sum();
        }

        /** The key names the amax: two with one key are one. */
        @Override
        public boolean equals(Object o) {
            return o instanceof SharedAmax other && key.equals(other.key);
        }

        @Override
        public int hashCode() {
            return key.hashCode();
        }
    }
}
