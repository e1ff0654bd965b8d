package dev.moeport.arch;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import dev.moeport.cli.CliRun;
import dev.moeport.format.Checkpoint;
import dev.moeport.format.Checkpoints;
import dev.moeport.tensor.FloatFormats;
import dev.moeport.tensor.Shape;
import dev.moeport.testing.Shared;
import java.io.ByteArrayOutputStream;
import java.lang.foreign.Arena;
import java.lang.foreign.ValueLayout;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Path;
import java.util.Arrays;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Qwen3-Next, Qwen3.5 and Llama 4: the Megatron-Core tensors built here from the fixtures' HF tensors by the published
 * mappings, apart from moeport's rule code. The fixtures' sizes: hidden 128; Gated DeltaNet with 2 key heads and 4 value
 * heads of 32 (2 value heads per key head); attention with 4 query heads of 32 in 2 KV groups, each query head with its
 * gate; Llama 4 with 8 experts of intermediate size 64.
 */
class GatedDeltaNetAndLlama4Test {
    @TempDir
    Path tmp;

    private static final int HIDDEN = 128;
    private static final int ROW = HIDDEN * 2; // bytes of a BF16 row

    private static Path hf(String arch) {
        return Shared.fixture(arch).resolve("hf");
    }

    private static byte[] bytes(Checkpoint c, String name) {
        try (Arena arena = Arena.ofConfined()) {
            return c.tensor(name).bytes(arena).toArray(ValueLayout.JAVA_BYTE);
        }
    }

    /** Rows {@code [from, from + count)} of a BF16 matrix {@code HIDDEN} wide. */
    private static byte[] rows(byte[] matrix, int from, int count) {
        return Arrays.copyOfRange(matrix, from * ROW, (from + count) * ROW);
    }

    private Checkpoint imported(String arch) {
        return Checkpoints.open(CliRun.succeeding("import", "--ckpt-format", "safetensors", "--in", hf(arch).toString(), "--out",
                tmp.resolve(arch).toString()));
    }

    /**
     * Qwen3-Next's in_proj: HF in_proj_qkvz holds, per key head g, [q_g (32) ; k_g (32) ; v of its 2 value heads (64) ;
     * z of them (64)] and in_proj_ba per key head [b (2) ; a (2)]; Megatron-Core's in_proj is [q ; k ; v ; z ; b ; a], each
     * whole (Megatron-Bridge src/megatron/bridge/models/conversion/param_mapping.py, merge_gdn_linear_weights, lines
     * 3502-3550, at TP 1; Megatron-Core megatron/core/ssm/gated_delta_net/gdn.py in_proj_split_sections, lines 48-58).
     * The GDN output norm is zero-centered in Megatron-Core: HF's weight minus one (param_mapping.py
     * RMSNorm2ZeroCenteredRMSNormMapping, lines 2839-2857). The attention's q_proj gives each head [query (32) ; gate (32)];
     * linear_qkv is per KV group [queries of its 2 heads ; their gates ; k_g ; v_g] (param_mapping.py merge_qkv_weights
     * with attention_output_gate, lines 3143-3200).
     */
    @Test
    void qwen3NextInProjGatedQueryAndZeroCenteredNorm() {
        try (Checkpoint h = Checkpoints.open(hf("qwen3_next")); Checkpoint m = imported("qwen3_next")) {
            byte[] qkvz = bytes(h, "model.layers.1.linear_attn.in_proj_qkvz.weight");
            byte[] ba = bytes(h, "model.layers.1.linear_attn.in_proj_ba.weight");
            ByteArrayOutputStream inProj = new ByteArrayOutputStream();
            int[][] qkvzParts = {{0, 32}, {32, 32}, {64, 64}, {128, 64}}; // q, k, v, z within a key head's 192 rows
            for (int[] part : qkvzParts) {
                for (int g = 0; g < 2; g++) {
                    inProj.writeBytes(rows(qkvz, g * 192 + part[0], part[1]));
                }
            }
            for (int[] part : new int[][] {{0, 2}, {2, 2}}) { // b, a within a key head's 4 rows
                for (int g = 0; g < 2; g++) {
                    inProj.writeBytes(rows(ba, g * 4 + part[0], part[1]));
                }
            }
            assertArrayEquals(inProj.toByteArray(), bytes(m, "decoder.layers.1.self_attention.in_proj.weight"));
            assertEquals(Shape.of(384 + 8, HIDDEN), m.tensor("decoder.layers.1.self_attention.in_proj.weight").shape());

            byte[] norm = bytes(h, "model.layers.1.linear_attn.norm.weight");
            ByteBuffer expected = ByteBuffer.allocate(norm.length).order(ByteOrder.LITTLE_ENDIAN);
            ByteBuffer hfNorm = ByteBuffer.wrap(norm).order(ByteOrder.LITTLE_ENDIAN);
            for (int i = 0; i < norm.length / 2; i++) {
                float w = Float.intBitsToFloat(hfNorm.getShort(2 * i) << 16);
                expected.putShort(2 * i, FloatFormats.floatToBf16(w - 1f));
            }
            assertArrayEquals(expected.array(), bytes(m, "decoder.layers.1.self_attention.out_norm.weight"));
            assertArrayEquals(bytes(h, "model.layers.1.input_layernorm.weight"), bytes(m, "decoder.layers.1.self_attention.in_proj.layer_norm_weight"));

            byte[] q = bytes(h, "model.layers.3.self_attn.q_proj.weight");
            byte[] k = bytes(h, "model.layers.3.self_attn.k_proj.weight");
            byte[] v = bytes(h, "model.layers.3.self_attn.v_proj.weight");
            ByteArrayOutputStream qkv = new ByteArrayOutputStream();
            for (int g = 0; g < 2; g++) {
                for (int head = 2 * g; head < 2 * g + 2; head++) {
                    qkv.writeBytes(rows(q, head * 64, 32));
                }
                for (int head = 2 * g; head < 2 * g + 2; head++) {
                    qkv.writeBytes(rows(q, head * 64 + 32, 32));
                }
                qkv.writeBytes(rows(k, g * 32, 32));
                qkv.writeBytes(rows(v, g * 32, 32));
            }
            assertArrayEquals(qkv.toByteArray(), bytes(m, "decoder.layers.3.self_attention.linear_qkv.weight"));
            assertArrayEquals(bytes(h, "model.layers.3.mlp.shared_expert_gate.weight"), bytes(m, "decoder.layers.3.mlp.shared_experts.gate_weight"));
        }
    }

    /**
     * Qwen3.5's four in_proj tensors are flat: Megatron-Core's in_proj is [in_proj_qkv ; in_proj_z ; in_proj_b ; in_proj_a]
     * (param_mapping.py _fuse_gdn_separate_to_grouped then merge_gdn_linear_weights, lines 3609-3666 and 3502-3550: the
     * grouping one undoes the other at TP 1). The conv1d's channels are q, k, v in both (GDNConv1dMapping, lines 2228-2247).
     */
    @Test
    void qwen35InProjIsTheFourTensorsInOrder() {
        try (Checkpoint h = Checkpoints.open(hf("qwen3_5_moe")); Checkpoint m = imported("qwen3_5_moe")) {
            ByteArrayOutputStream inProj = new ByteArrayOutputStream();
            for (String part : new String[] {"qkv", "z", "b", "a"}) {
                inProj.writeBytes(bytes(h, "model.layers.2.linear_attn.in_proj_" + part + ".weight"));
            }
            assertArrayEquals(inProj.toByteArray(), bytes(m, "decoder.layers.2.self_attention.in_proj.weight"));
            assertArrayEquals(bytes(h, "model.layers.2.linear_attn.conv1d.weight"), bytes(m, "decoder.layers.2.self_attention.conv1d.weight"));
        }
    }

    /**
     * Llama 4's experts: Model Optimizer stacks each expert's linear_fc1 [gate ; up] [2I, H] and transposes it into
     * gate_up_proj [E, H, 2I], linear_fc2 [H, I] into down_proj [E, I, H] (modelopt/torch/export/plugins/mcore_llama.py
     * llama4_causal_lm_export, lines 53-82; unified_export_megatron.py, the packed experts stacked then transpose(-2, -1), lines 1398-1404).
     */
    @Test
    void llama4ExpertsAreTransposedStacks() {
        try (Checkpoint h = Checkpoints.open(hf("llama4")); Checkpoint m = imported("llama4"); Arena arena = Arena.ofConfined()) {
            int inter = 64;
            for (int e : new int[] {0, 6}) {
                var gateUp = h.tensor("model.layers.1.feed_forward.experts.gate_up_proj").select(e, "x").bytes(arena); // [H, 2I]
                var fc1 = m.tensor("decoder.layers.1.mlp.experts.linear_fc1.weight" + e).bytes(arena); // [2I, H]
                for (int r = 0; r < 2 * inter; r++) {
                    for (int c = 0; c < HIDDEN; c++) {
                        assertEquals(gateUp.getAtIndex(FloatFormats.SHORT_LE, (long) c * 2 * inter + r), fc1.getAtIndex(FloatFormats.SHORT_LE, (long) r * HIDDEN + c));
                    }
                }
                var down = h.tensor("model.layers.1.feed_forward.experts.down_proj").select(e, "x").bytes(arena); // [I, H]
                var fc2 = m.tensor("decoder.layers.1.mlp.experts.linear_fc2.weight" + e).bytes(arena); // [H, I]
                for (int r = 0; r < HIDDEN; r++) {
                    for (int c = 0; c < inter; c++) {
                        assertEquals(down.getAtIndex(FloatFormats.SHORT_LE, (long) c * HIDDEN + r), fc2.getAtIndex(FloatFormats.SHORT_LE, (long) r * inter + c));
                    }
                }
            }
            ByteArrayOutputStream fc1 = new ByteArrayOutputStream();
            fc1.writeBytes(bytes(h, "model.layers.0.feed_forward.shared_expert.gate_proj.weight"));
            fc1.writeBytes(bytes(h, "model.layers.0.feed_forward.shared_expert.up_proj.weight"));
            assertArrayEquals(fc1.toByteArray(), bytes(m, "decoder.layers.0.mlp.shared_experts.linear_fc1.weight"));
            assertArrayEquals(bytes(h, "model.layers.0.feed_forward.router.weight"), bytes(m, "decoder.layers.0.mlp.router.weight"));
        }
    }
}
