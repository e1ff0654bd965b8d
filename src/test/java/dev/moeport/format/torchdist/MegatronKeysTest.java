package dev.moeport.format.torchdist;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import org.junit.jupiter.api.Test;

class MegatronKeysTest {
    @Test
    void layerStackedKeysBecomePerLayerNames() {
        assertTrue(MegatronKeys.isLayerStacked("decoder.layers.self_attention.linear_qkv.weight"));
        assertFalse(MegatronKeys.isLayerStacked("decoder.layers.12.self_attention.linear_qkv.weight"));
        assertFalse(MegatronKeys.isLayerStacked("decoder.final_norm.weight"));
        assertEquals("decoder.layers.7.self_attention.linear_qkv.weight",
                MegatronKeys.layerName("decoder.layers.self_attention.linear_qkv.weight", 7));
        assertEquals("decoder.layers.0.mlp.experts.linear_fc2.weight",
                MegatronKeys.layerName("decoder.layers.mlp.experts.experts.linear_fc2.weight", 0));
    }

    @Test
    void expertKeysAreDoubledWeightsAndQuantizerStateAlike() {
        // megatron/core/transformer/moe/experts.py:1089 renames every key of a grouped linear's sub state dict.
        assertEquals("decoder.layers.1.mlp.experts.experts.linear_fc1.weight", MegatronKeys.doubled("decoder.layers.1.mlp.experts.linear_fc1.weight"));
        assertEquals("decoder.layers.1.mlp.experts.experts.linear_fc2.weight_quantizer._amax",
                MegatronKeys.doubled("decoder.layers.1.mlp.experts.linear_fc2.weight_quantizer._amax"));
        assertEquals("decoder.layers.1.mlp.linear_fc1.weight_quantizer._amax", MegatronKeys.doubled("decoder.layers.1.mlp.linear_fc1.weight_quantizer._amax"));
    }

    @Test
    void doubledExpertNamesAreFolded() {
        assertEquals("decoder.layers.2.mlp.experts.linear_fc1.weight",
                MegatronKeys.undoubled("decoder.layers.2.mlp.experts.experts.linear_fc1.weight"));
        assertEquals("decoder.layers.2.mlp.shared_experts.linear_fc1.weight",
                MegatronKeys.undoubled("decoder.layers.2.mlp.shared_experts.linear_fc1.weight"));
        assertEquals("decoder.layers.2.mlp.shared_experts.experts.x",
                MegatronKeys.undoubled("decoder.layers.2.mlp.shared_experts.experts.x"));
    }

    @Test
    void skipsWhatIsNotAModelTensor() {
        assertEquals("optimizer state", MegatronKeys.skipReason("optimizer.state.exp_avg.decoder.layers.0.mlp.router.weight", false));
        assertEquals("rng state", MegatronKeys.skipReason("rng_state/shard_0_8", true));
        assertEquals("extra state", MegatronKeys.skipReason("decoder.layers.0.mlp.linear_fc1._extra_state/shard_0_2", true));
        assertEquals("Megatron common state", MegatronKeys.skipReason("common_state/shard_0_1", true));
        assertEquals("Transformer Engine extra state", MegatronKeys.skipReason("decoder.layers.self_attention.linear_proj._extra_state", false));
        assertEquals("ShardedObject", MegatronKeys.skipReason("decoder.layers.0.something/shard_0_1", true));
        assertEquals("pickled object", MegatronKeys.skipReason("args", true));
        assertNull(MegatronKeys.skipReason("decoder.layers.0.mlp.experts.experts.linear_fc1.weight", false));
    }
}
