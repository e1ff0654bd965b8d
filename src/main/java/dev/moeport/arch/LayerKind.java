package dev.moeport.arch;

import java.util.Locale;

/** What a decoder layer holds; a layer may hold several (attention and an MoE, in most models). */
public enum LayerKind {
    MAMBA,
    /** Gated DeltaNet linear attention (Qwen3-Next's and Qwen3.5's {@code linear_attn}). */
    GATED_DELTA_NET,
    ATTENTION,
    /** A dense feed-forward block. */
    MLP,
    /** A mixture-of-experts block: router, routed experts, maybe shared experts. */
    MOE;

    public String label() {
        return name().toLowerCase(Locale.ROOT);
    }
}
