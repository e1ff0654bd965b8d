package dev.moeport.format.torchdist;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.moeport.MoeportException;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The non-tensor entries Megatron writes: common state and every module's extra state, labelled for what they hold. */
class ShardedObjectsTest {
    private static final Path MEGATRON_LOCAL = Path.of("fixtures/megatron/mixtral_local_tp2ep2");

    @TempDir
    Path tmp;

    private static Map<String, Integer> countByReason(Path checkpoint) {
        try (TorchDistCheckpoint c = TorchDistCheckpoint.open(checkpoint)) {
            Map<String, Integer> counts = new TreeMap<>();
            c.skipped().values().forEach(r -> counts.merge(r, 1, Integer::sum));
            return counts;
        }
    }

    @Test
    void aCheckpointMegatronCoreSavedWithTheLocalSpec() {
        // fixtures/megatron/GENERATED_BY: saved by Megatron-Core's dist_checkpointing.save, local spec, no Transformer Engine;
        // 2 layers x (linear_qkv, linear_proj) + 2 layers x 8 experts x (fc1, fc2) extra states, one common state.
        assertEquals(Map.of("Megatron common state", 1, "local linear extra state (empty)", 36), countByReason(MEGATRON_LOCAL));
        // The script saved the model's sharded state dict alone: Megatron's common state is an empty dict.
        assertEquals(Map.of(), TorchDistCheckpoint.commonState(MEGATRON_LOCAL));
    }

    @Test
    void extraStateIsLabelledByWhatItHolds() throws Exception {
        Map<String, Object> objects = new LinkedHashMap<>();
        objects.put("decoder.layers.0.self_attention.linear_qkv._extra_state/shard_0_1", null);
        objects.put("decoder.layers.0.self_attention.linear_proj._extra_state/shard_0_1", ObjectCheckpoints.byteTensor(12));
        // Model Optimizer's extra state (quantization/plugins/megatron.py:156-163) with a quantizer's
        // _pytorch_state_metadata (nn/modules/tensor_quantizer.py:1306-1318): shapes and dtypes of its buffers.
        Map<String, Object> amax = Map.of("shape", ObjectCheckpoints.torchSize(), "dtype", ObjectCheckpoints.torchDtype("float32"));
        Map<String, Object> quantizer = Map.of("_num_bits", ObjectCheckpoints.tuple(2L, 1L),
                "_pytorch_state_metadata", Map.of("params", Map.of(), "buffers", Map.of("_amax", amax)));
        objects.put("decoder.layers.0.mlp.linear_fc1._extra_state/shard_0_1",
                Map.of("modelopt_quantizer_state", Map.of("weight_quantizer", quantizer)));
        objects.put("common_state/shard_0_1", Map.of("iteration", 5L, "checkpoint_version", 3.0));
        Path ckpt = ObjectCheckpoints.write(tmp.resolve("ckpt"), objects);
        try (TorchDistCheckpoint c = TorchDistCheckpoint.open(ckpt)) {
            assertEquals(List.of("local linear extra state (empty)", "Transformer Engine extra state", "Model Optimizer quantizer state",
                    "Megatron common state"), List.copyOf(c.skipped().values()));
        }
        assertEquals(Map.of("iteration", 5L, "checkpoint_version", 3.0), TorchDistCheckpoint.commonState(ckpt));
    }

    @Test
    void anOlderMegatronsCommonPtIsRead() throws Exception {
        Path ckpt = ObjectCheckpoints.write(tmp.resolve("legacy"), Map.of());
        ObjectCheckpoints.writeLegacyCommon(ckpt, Map.of("modelopt_version", "0.29.0"));
        assertEquals(Map.of("modelopt_version", "0.29.0"), TorchDistCheckpoint.commonState(ckpt));
        assertNull(TorchDistCheckpoint.commonState(ObjectCheckpoints.write(tmp.resolve("none"), Map.of())));
    }

    @Test
    void aCommonStateHoldingMoreThanPlainDataIsRefused() throws Exception {
        Path ckpt = ObjectCheckpoints.write(tmp.resolve("tensor"), Map.of("common_state/shard_0_1", Map.of("t", ObjectCheckpoints.byteTensor(4))));
        MoeportException e = assertThrows(MoeportException.class, () -> TorchDistCheckpoint.commonState(ckpt));
        assertTrue(e.getMessage().contains("common_state/shard_0_1") && e.getMessage().contains("not plain Python data"), e.getMessage());
    }
}
