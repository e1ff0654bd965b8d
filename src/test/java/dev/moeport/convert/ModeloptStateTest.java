package dev.moeport.convert;

import static dev.moeport.format.torchdist.ObjectCheckpoints.tuple;
import static dev.moeport.testing.TestCheckpoints.assertSameTensors;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.moeport.cli.CliRun;
import dev.moeport.format.Checkpoint;
import dev.moeport.format.Checkpoints;
import dev.moeport.tensor.DType;
import dev.moeport.format.torchdist.ObjectCheckpoints;
import dev.moeport.quant.QuantFormat;
import dev.moeport.testing.Shared;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code export} of a Model Optimizer-quantized Megatron checkpoint takes its recipe from the
 * {@code modelopt_state/} Megatron-LM saves in the iteration folder. The states are built here from
 * the layout read in NVIDIA/Model-Optimizer (a2fbac7):
 * modelopt/torch/opt/conversion.py:489-490 (modelopt_state: {"modelopt_state_dict": [(mode, {"config",
 * "metadata"})], "modelopt_version"}), modelopt/torch/opt/plugins/mcore_dist_checkpointing.py:40-64 and
 * 130-134 (metadata emptied, saved with dist_checkpointing.save into {checkpoint}/modelopt_state), the
 * NVFP4 preset modelopt_recipes/configs/ptq/presets/model/nvfp4.yaml with units/w4a4_nvfp4_nvfp4.yaml and
 * numerics/nvfp4.yaml (num_bits e2m1, block_sizes {-1: 16, type: dynamic, scale_bits: e4m3}), whose ExMy
 * strings modelopt/torch/opt/config_loader.py:88-108 turns into tuples; and the older dict form of
 * quant_cfg (config.py:1460-1461, "legacy single-key format").
 */
class ModeloptStateTest {
    private static final Path QWEN = Shared.fixture("qwen3_moe/hf");

    @TempDir
    Path tmp;

    /** Model Optimizer 0.47's modelopt_state of a model quantized with the given weight and input quantizer attributes. */
    private static Map<String, Object> modeloptState(Object weightCfg, Object inputCfg) {
        List<Object> quantCfg = List.of(
                Map.of("quantizer_name", "*", "enable", false),
                entry("*weight_quantizer", weightCfg),
                entry("*input_quantizer", inputCfg),
                Map.of("quantizer_name", "*lm_head*", "enable", false),
                Map.of("quantizer_name", "*router*", "enable", false));
        Map<String, Object> config = new LinkedHashMap<>();
        config.put("quant_cfg", quantCfg);
        config.put("algorithm", "max");
        Map<String, Object> state = new LinkedHashMap<>();
        state.put("modelopt_state_dict", List.of(tuple("quantize", Map.of("config", config, "metadata", Map.of()))));
        state.put("modelopt_version", "0.47.0");
        return state;
    }

    private static Map<String, Object> entry(String name, Object cfg) {
        Map<String, Object> e = new LinkedHashMap<>();
        e.put("quantizer_name", name);
        e.put("parent_class", null);
        e.put("cfg", cfg);
        e.put("enable", true);
        return e;
    }

    private static Map<String, Object> nvfp4() {
        Map<Object, Object> blocks = new LinkedHashMap<>();
        blocks.put(-1L, 16L);
        blocks.put("type", "dynamic");
        blocks.put("scale_bits", tuple(4L, 3L));
        Map<String, Object> cfg = new LinkedHashMap<>();
        cfg.put("num_bits", tuple(2L, 1L));
        cfg.put("axis", null);
        cfg.put("block_sizes", blocks);
        return cfg;
    }

    /** The Qwen3-MoE fixture quantized to NVFP4 and imported into Megatron's torch_dist with its calibration kept. */
    private Path quantizedMegatron() {
        Path nvfp4 = CliRun.succeeding("quantize", "--in", QWEN.toString(), "--out", tmp.resolve("hf-nvfp4").toString(), "--format", "nvfp4");
        return CliRun.succeeding("import", "--in", nvfp4.toString(), "--out", tmp.resolve("mcore").toString(), "--keep-quantized");
    }

    @Test
    void exportTakesTheFormatFromModeloptState() throws Exception {
        Path mcore = quantizedMegatron();
        Path iteration = mcore.resolve("iter_0000000");
        assertTrue(Files.isDirectory(iteration), "import writes Megatron-LM's iteration folder");
        ObjectCheckpoints.write(iteration.resolve("modelopt_state"), Map.of("common_state/shard_0_1", modeloptState(nvfp4(), nvfp4())));

        CliRun auto = CliRun.of("export", "--in", mcore.toString(), "--hf-config", QWEN.toString(), "--out", tmp.resolve("auto").toString());
        assertEquals(0, auto.code(), auto.err());
        assertTrue(auto.out().contains("quantized as nvfp4: the recipe of Model Optimizer 0.47.0"), auto.out());
        Path explicit = CliRun.succeeding("export", "--in", mcore.toString(), "--hf-config", QWEN.toString(), "--out", tmp.resolve("explicit").toString(),
                "--format", "nvfp4");
        assertSameTensors(explicit, tmp.resolve("auto"));
        assertEquals(Files.readString(explicit.resolve("hf_quant_config.json")), Files.readString(tmp.resolve("auto/hf_quant_config.json")));
    }

    @Test
    void anOlderModelOptimizersDictRecipeInCommonPtIsRead() throws Exception {
        Map<String, Object> fp8 = new LinkedHashMap<>();
        fp8.put("num_bits", tuple(4L, 3L));
        fp8.put("axis", null);
        Map<String, Object> quantCfg = new LinkedHashMap<>();
        quantCfg.put("*weight_quantizer", fp8);
        quantCfg.put("*input_quantizer", fp8);
        quantCfg.put("default", Map.of("enable", false));
        Map<String, Object> state = Map.of("modelopt_state_dict", List.of(tuple("quantize", Map.of("config", Map.of("quant_cfg", quantCfg), "metadata", Map.of()))),
                "modelopt_version", "0.27.1");
        Path checkpoint = tmp.resolve("ckpt");
        Path modelopt = ObjectCheckpoints.write(checkpoint.resolve("modelopt_state"), Map.of());
        ObjectCheckpoints.writeLegacyCommon(modelopt, state);
        ModeloptState recipe = ModeloptState.beside(checkpoint);
        assertEquals(QuantFormat.FP8, recipe.format());
        assertEquals("0.27.1", recipe.version());
        assertTrue(recipe.quantizes("decoder.layers.0.self_attention.linear_qkv"));
        assertNull(ModeloptState.beside(tmp), "no modelopt_state: no recipe");
    }

    @Test
    void theRecipesDisabledQuantizersStayUnquantized() throws Exception {
        // presets/model/nvfp4_mlp_only.yaml: everything off, then '*mlp*weight_quantizer' and '*mlp*input_quantizer' NVFP4,
        // then units/default_disabled_quantizers.yaml ('*router*', '*output_layer*', ... off).
        List<Object> quantCfg = List.of(
                Map.of("quantizer_name", "*", "enable", false),
                entry("*mlp*weight_quantizer", nvfp4()),
                entry("*mlp*input_quantizer", nvfp4()),
                Map.of("quantizer_name", "*router*", "enable", false),
                Map.of("quantizer_name", "*output_layer*", "enable", false));
        Map<String, Object> state = Map.of("modelopt_state_dict", List.of(tuple("quantize", Map.of("config", Map.of("quant_cfg", quantCfg, "algorithm", "max"),
                "metadata", Map.of()))), "modelopt_version", "0.47.0");
        Path mcore = CliRun.succeeding("import", "--in", QWEN.toString(), "--out", tmp.resolve("mcore").toString());
        ObjectCheckpoints.write(mcore.resolve("iter_0000000/modelopt_state"), Map.of("common_state/shard_0_1", state));
        Path out = CliRun.succeeding("export", "--in", mcore.toString(), "--hf-config", QWEN.toString(), "--out", tmp.resolve("mlp-only").toString());
        try (Checkpoint hf = Checkpoints.open(out)) {
            assertEquals(DType.BF16, hf.tensor("model.layers.1.self_attn.q_proj.weight").dtype(), "attention is not in '*mlp*'");
            assertFalse(hf.contains("model.layers.1.self_attn.q_proj.weight_scale"));
            assertTrue(hf.contains("model.layers.1.mlp.experts.3.down_proj.weight_scale_2"), "experts are");
            assertTrue(hf.contains("model.layers.0.mlp.down_proj.weight_scale_2"), "a dense MLP is");
        }
    }

    @Test
    void aRecipeMoeportDoesNotWriteIsRefusedAndNothingIsWritten() throws Exception {
        Path mcore = CliRun.succeeding("import", "--in", QWEN.toString(), "--out", tmp.resolve("mcore").toString());
        // INT4 weights in 128-element blocks followed by FP8: Model Optimizer's W4A8 AWQ (config.py W4A8_AWQ_BETA_CFG, a list as cfg).
        Map<Object, Object> blocks = new LinkedHashMap<>();
        blocks.put(-1L, 128L);
        blocks.put("type", "static");
        List<Object> w4a8 = List.of(Map.of("num_bits", 4L, "block_sizes", blocks), Map.of("num_bits", tuple(4L, 3L)));
        ObjectCheckpoints.write(mcore.resolve("iter_0000000/modelopt_state"), Map.of("common_state/shard_0_1", modeloptState(w4a8, Map.of("num_bits", tuple(4L, 3L)))));
        Path out = tmp.resolve("out");
        CliRun r = CliRun.of("export", "--in", mcore.toString(), "--hf-config", QWEN.toString(), "--out", out.toString());
        assertEquals(1, r.code(), r.out());
        assertTrue(r.err().contains("modelopt_state") && r.err().contains("which moeport does not write") && r.err().lines().count() == 1, r.err());
        assertFalse(Files.exists(out), "nothing written");
        // --format decides without reading the recipe.
        assertEquals(0, CliRun.of("export", "--in", mcore.toString(), "--hf-config", QWEN.toString(), "--out", out.toString(), "--format", "fp8").code());
    }

    @Test
    void formatsOfModelOptimizersPresets() {
        Map<Object, Object> mx = new LinkedHashMap<>();
        mx.put(-1L, 32L);
        mx.put("type", "dynamic");
        mx.put("scale_bits", List.of(8L, 0L));
        Map<Object, Object> block2d = new LinkedHashMap<>();
        block2d.put(-1L, 128L);
        block2d.put(-2L, 128L);
        java.util.HashMap<String, Object> fp8 = new java.util.HashMap<>();
        fp8.put("num_bits", List.of(4L, 3L));
        fp8.put("axis", null);
        assertEquals(QuantFormat.FP8, ModeloptState.formatOf(fp8));
        assertEquals(QuantFormat.FP8_PC, ModeloptState.formatOf(Map.of("num_bits", List.of(4L, 3L), "axis", 0L)));
        assertEquals(QuantFormat.FP8_PB, ModeloptState.formatOf(Map.of("num_bits", List.of(4L, 3L), "block_sizes", block2d)));
        assertEquals(QuantFormat.MXFP8, ModeloptState.formatOf(Map.of("num_bits", "e4m3", "block_sizes", mx)));
        assertEquals(QuantFormat.MXFP4, ModeloptState.formatOf(Map.of("num_bits", List.of(2L, 1L), "block_sizes", mx)));
        assertEquals(QuantFormat.INT8_WO, ModeloptState.formatOf(Map.of("num_bits", 8L, "axis", 0L)));
        assertNull(ModeloptState.formatOf(Map.of("num_bits", List.of(5L, 2L))), "FP8 E5M2 is not written");
        assertNull(ModeloptState.formatOf(Map.of("num_bits", 8L)), "per-tensor INT8 is not written");
    }
}
