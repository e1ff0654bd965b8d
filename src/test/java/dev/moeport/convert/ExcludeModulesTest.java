package dev.moeport.convert;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.List;
import org.junit.jupiter.api.Test;

/**
 * {@code exclude_modules} in Model Optimizer 0.47's wildcard forms (modelopt/torch/export/quant_utils.py,
 * {@code _prefix_wildcard_summarize_exclude_modules}, lines 606-677): the expected lists are worked out by hand from
 * that function's rules, and the first is Model Optimizer's own test case (tests/gpu/torch/export/test_export.py,
 * lines 126-141: layers 1 and 2 quantized, layer 8 not, gives {@code ["layer8"]}).
 */
class ExcludeModulesTest {

    @Test
    void modelOptimizersOwnCase() {
        assertEquals(List.of("layer8"), QuantConfig.excludeModules(List.of("layer8"), List.of("layer1", "layer2")));
    }

    @Test
    void aWholeUnquantizedLayerIsOnePrefixWildcardAndRoutersKeepTheirNames() {
        List<String> quantized = List.of("model.layers.0.self_attn.q_proj", "model.layers.0.mlp.experts.0.gate_proj");
        // Layer 1 (an MTP layer, say) has nothing quantized: "model.layers.1*" names no quantized module, and covers its router.
        List<String> unquantized = List.of("model.layers.0.mlp.gate", "model.layers.1.self_attn.q_proj", "model.layers.1.mlp.gate", "lm_head");
        assertEquals(List.of("lm_head", "model.layers.0.mlp.gate", "model.layers.1*"), QuantConfig.excludeModules(unquantized, quantized));
    }

    @Test
    void aPrefixOfAQuantizedLayersNameFallsBackToItsDottedPair() {
        // "model.layers.1*" would also name model.layers.10: the pair {model.layers.1, model.layers.1.*} is written as its second.
        List<String> quantized = List.of("model.layers.0.self_attn.q_proj", "model.layers.10.self_attn.q_proj");
        List<String> unquantized = List.of("model.layers.1.self_attn.q_proj", "model.layers.1.mlp.gate");
        assertEquals(List.of("model.layers.1.*"), QuantConfig.excludeModules(unquantized, quantized));
    }
}
