package dev.moeport.cli;

import static dev.moeport.testing.TestCheckpoints.assertSameTensor;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.moeport.format.Checkpoint;
import dev.moeport.format.Checkpoints;
import dev.moeport.testing.Shared;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code --recipe}: routed experts nvfp4, attention fp8, the rest bf16. Each module's tensors are those of the
 * single-format run that quantizes only its kind; the configuration is Model Optimizer 0.47's MIXED_PRECISION
 * (modelopt/torch/export/quant_utils.py process_layer_quant_config and its test, tests/gpu/torch/export/test_export.py
 * lines 91-124: quant_algo, kv_cache_quant_algo and quantized_layers, no exclude_modules; convert_hf_config.py lines
 * 236-263: a config group per layer description targeting its layers sorted, and an empty ignore), or several
 * compressed-tensors config groups with format mixed-precision (quant_config.py, QuantizationConfig.from_pretrained).
 */
class MixedPrecisionTest {
    private static final Path HF = Shared.fixture("qwen3_moe").resolve("hf");
    private static final String EXPERTS = "*.mlp.experts.*";
    private static final String ATTENTION = "*.self_attn.*";
    private static final String EXPERT = "model.layers.1.mlp.experts.3.up_proj";
    private static final String Q = "model.layers.0.self_attn.q_proj";

    @TempDir
    Path tmp;

    private Path recipe(String json) throws Exception {
        Path f = tmp.resolve("recipe-" + Math.abs(json.hashCode()) + ".json");
        Files.writeString(f, json);
        return f;
    }

    private Path expertsNvfp4AttentionFp8() throws Exception {
        return recipe("{\"rules\": [{\"modules\": \"" + EXPERTS + "\", \"format\": \"nvfp4\"}, {\"modules\": \"" + ATTENTION + "\", \"format\": \"fp8\"}]}");
    }

    /** Every tensor of {@code mixed} as the run that quantized only its kind wrote it. */
    private static void assertEachModuleAsItsFormatAlone(Path mixed, Path experts, Path attention) {
        try (Checkpoint m = Checkpoints.open(mixed); Checkpoint e = Checkpoints.open(experts); Checkpoint a = Checkpoints.open(attention)) {
            for (String name : m.tensors().keySet()) {
                Checkpoint expected = name.contains(".self_attn.") ? a : e;
                assertTrue(expected.contains(name), name);
                assertSameTensor(expected.tensor(name), m.tensor(name));
            }
            assertEquals(e.tensors().size() + countAttentionScales(a), m.tensors().size());
        }
    }

    /** Scale tensors the attention-only fp8 run adds (its weights replace BF16 ones of the same name). */
    private static long countAttentionScales(Checkpoint a) {
        return a.tensors().keySet().stream().filter(n -> n.contains(".self_attn.") && n.endsWith("_scale")).count();
    }

    @Test
    void modelOptimizersMixedPrecision() throws Exception {
        Path mixed = CliRun.succeeding("quantize", "--recipe", expertsNvfp4AttentionFp8().toString(), "--in", HF.toString(), "--out", tmp.resolve("mixed").toString());
        Path experts = CliRun.succeeding("quantize", "--format", "nvfp4", "--include", EXPERTS, "--in", HF.toString(), "--out", tmp.resolve("e").toString());
        Path attention = CliRun.succeeding("quantize", "--format", "fp8", "--include", ATTENTION, "--in", HF.toString(), "--out", tmp.resolve("a").toString());
        assertEachModuleAsItsFormatAlone(mixed, experts, attention);

        ObjectMapper json = new ObjectMapper();
        JsonNode q = json.readTree(mixed.resolve("hf_quant_config.json").toFile()).get("quantization");
        List<String> keys = new ArrayList<>();
        q.fieldNames().forEachRemaining(keys::add);
        assertEquals(List.of("quant_algo", "kv_cache_quant_algo", "quantized_layers"), keys);
        assertEquals("MIXED_PRECISION", q.get("quant_algo").asText());
        assertTrue(q.get("kv_cache_quant_algo").isNull());
        JsonNode layers = q.get("quantized_layers");
        // Uncalibrated NVFP4 is Model Optimizer's W4A16_NVFP4 (NVFP4 weights, activations not quantized).
        assertEquals(json.readTree("{\"quant_algo\": \"W4A16_NVFP4\", \"group_size\": 16}"), layers.get(EXPERT));
        assertEquals(json.readTree("{\"quant_algo\": \"FP8\"}"), layers.get(Q));
        assertFalse(layers.has("model.layers.1.mlp.gate") || layers.has("lm_head"), layers.toString());

        JsonNode c = json.readTree(mixed.resolve("config.json").toFile()).get("quantization_config");
        assertEquals("modelopt", c.get("quant_method").asText());
        assertEquals("MIXED_PRECISION", c.get("quant_algo").asText());
        assertEquals("[]", c.get("ignore").toString());
        assertEquals(layers, c.get("quantized_layers"));
        List<String> targets = new ArrayList<>();
        for (JsonNode g : c.get("config_groups")) {
            List<String> t = new ArrayList<>();
            g.get("targets").forEach(n -> t.add(n.asText()));
            assertEquals(t.stream().sorted().toList(), t, "targets sorted");
            int bits = g.get("weights").get("num_bits").asInt();
            boolean fp8 = t.getFirst().contains(".self_attn.");
            assertEquals(fp8 ? 8 : 4, bits, t.getFirst());
            // FP8's group quantizes inputs; W4A16_NVFP4's is the weights alone (convert_hf_config.py lines 60-64).
            assertEquals(fp8, g.has("input_activations"), g.toString());
            targets.addAll(t);
        }
        assertEquals(c.get("config_groups").size(), 2);
        List<String> listed = new ArrayList<>();
        layers.fieldNames().forEachRemaining(listed::add);
        assertEquals(listed.stream().sorted().toList(), targets.stream().sorted().toList());

        // dequantize and import read it back, module by module in its own format.
        Path dm = CliRun.succeeding("dequantize", "--in", mixed.toString(), "--out", tmp.resolve("dm").toString());
        try (Checkpoint d = Checkpoints.open(dm);
             Checkpoint de = Checkpoints.open(CliRun.succeeding("dequantize", "--in", experts.toString(), "--out", tmp.resolve("de").toString()));
             Checkpoint da = Checkpoints.open(CliRun.succeeding("dequantize", "--in", attention.toString(), "--out", tmp.resolve("da").toString()))) {
            assertSameTensor(de.tensor(EXPERT + ".weight"), d.tensor(EXPERT + ".weight"));
            assertSameTensor(da.tensor(Q + ".weight"), d.tensor(Q + ".weight"));
        }
        CliRun.succeeding("import", "--ckpt-format", "safetensors", "--in", mixed.toString(), "--out", tmp.resolve("m").toString());
        // check reads each module against quantized_layers: one left out is loaded as unquantized, one listed must be quantized.
        com.fasterxml.jackson.databind.node.ObjectNode edited = (com.fasterxml.jackson.databind.node.ObjectNode) json.readTree(mixed.resolve("hf_quant_config.json").toFile());
        com.fasterxml.jackson.databind.node.ObjectNode listedLayers = (com.fasterxml.jackson.databind.node.ObjectNode) edited.get("quantization").get("quantized_layers");
        listedLayers.remove(EXPERT);
        listedLayers.putObject("model.layers.1.mlp.gate").put("quant_algo", "FP8");
        Path broken = tmp.resolve("broken");
        Files.createDirectories(broken);
        try (var files = Files.list(mixed)) {
            for (Path f : files.toList()) {
                Files.copy(f, broken.resolve(f.getFileName()));
            }
        }
        json.writeValue(broken.resolve("hf_quant_config.json").toFile(), edited);
        CliRun r = CliRun.of("check", broken.toString());
        assertEquals(1, r.code(), r.out());
        assertTrue(r.out().contains(EXPERT + ": is quantized, but hf_quant_config.json quantized_layers does not list it"), r.out());
        assertTrue(r.out().contains("model.layers.1.mlp.gate: is listed in hf_quant_config.json quantized_layers, but has no scale tensors"), r.out());
        // TensorRT-LLM reads a MIXED_PRECISION checkpoint's layers from quant_cfg.json, which Model Optimizer's HF export does not write.
        CliRun trt = CliRun.of("check", mixed.toString(), "--engine", "trtllm");
        assertEquals(1, trt.code(), trt.out());
        assertTrue(trt.out().startsWith("hf_quant_config.json: quant_algo MIXED_PRECISION, but no quant_cfg.json"), trt.out());
    }

    /** export --recipe writes what quantize --recipe makes of the HF folder (Nemotron-H: Mamba, attention and MoE layers). */
    @Test
    void exportWithARecipeEqualsQuantize() throws Exception {
        Path nemotron = Shared.fixture("nemotron_h_tiny");
        Path recipe = recipe("{\"rules\": [{\"modules\": \"*.mixer.experts.*\", \"format\": \"nvfp4\"},"
                + " {\"modules\": \"*.mixer.[qkvo]_proj\", \"format\": \"fp8\"}, {\"modules\": \"*.mixer.shared_experts.*\", \"format\": \"bf16\"}]}");
        Path exported = CliRun.succeeding("export", "--in", nemotron.resolve("mcore_te").toString(), "--hf-config", nemotron.resolve("hf").toString(),
                "--out", tmp.resolve("export").toString(), "--recipe", recipe.toString());
        Path quantized = CliRun.succeeding("quantize", "--in", nemotron.resolve("hf").toString(), "--out", tmp.resolve("quantize").toString(),
                "--recipe", recipe.toString());
        dev.moeport.testing.TestCheckpoints.assertSameTensors(quantized, exported);
        ObjectMapper json = new ObjectMapper();
        JsonNode layers = json.readTree(exported.resolve("hf_quant_config.json").toFile()).at("/quantization/quantized_layers");
        assertEquals(json.readTree(quantized.resolve("hf_quant_config.json").toFile()).at("/quantization/quantized_layers"), layers);
        assertTrue(layers.has("backbone.layers.1.mixer.q_proj") && !layers.has("backbone.layers.2.mixer.shared_experts.up_proj"), layers.toString());
    }

    @Test
    void compressedTensorsConfigGroups() throws Exception {
        Path ct = CliRun.succeeding("quantize", "--recipe", expertsNvfp4AttentionFp8().toString(), "--flavor", "compressed-tensors", "--in", HF.toString(),
                "--out", tmp.resolve("ct").toString());
        Path mo = CliRun.succeeding("quantize", "--recipe", expertsNvfp4AttentionFp8().toString(), "--in", HF.toString(), "--out", tmp.resolve("mo").toString());
        JsonNode q = new ObjectMapper().readTree(ct.resolve("config.json").toFile()).get("quantization_config");
        assertEquals("mixed-precision", q.get("format").asText());
        assertEquals(2, q.get("config_groups").size());
        for (JsonNode g : q.get("config_groups")) {
            boolean fp8 = g.get("format").asText().equals("float-quantized");
            assertEquals(fp8 ? 8 : 4, g.get("weights").get("num_bits").asInt());
            g.get("targets").forEach(t -> assertEquals(fp8, t.asText().contains(".self_attn."), t.asText()));
        }
        try (Checkpoint c = Checkpoints.open(ct)) {
            assertTrue(c.contains(EXPERT + ".weight_packed") && c.contains(EXPERT + ".weight_global_scale"));
            assertTrue(c.contains(Q + ".weight") && c.contains(Q + ".weight_scale"));
        }
        dev.moeport.testing.TestCheckpoints.assertSameTensors(
                CliRun.succeeding("dequantize", "--in", mo.toString(), "--out", tmp.resolve("dm").toString()),
                CliRun.succeeding("dequantize", "--in", ct.toString(), "--out", tmp.resolve("dc").toString()));
    }

    @Test
    void badRecipesAreRefusedInOneLine() throws Exception {
        Path unknown = recipe("{\"rules\": [{\"modules\": \"*\", \"format\": \"nvfp5\"}]}");
        CliRun r = CliRun.of("quantize", "--recipe", unknown.toString(), "--in", HF.toString(), "--out", tmp.resolve("x").toString());
        assertEquals(2, r.code(), r.err());
        assertTrue(r.err().startsWith("moeport: " + unknown + ": rule 1: unknown format 'nvfp5'"), r.err());

        Path typo = recipe("{\"rules\": [{\"modules\": \"" + EXPERTS + "\", \"format\": \"nvfp4\"}, {\"modules\": \"*.self_atn.*\", \"format\": \"fp8\"}]}");
        r = CliRun.of("quantize", "--recipe", typo.toString(), "--in", HF.toString(), "--out", tmp.resolve("y").toString());
        assertEquals(1, r.code(), r.err());
        assertEquals("moeport: error: " + typo + ": rule 2 ('*.self_atn.*') matches no linear weight, or only ones an earlier rule or a default exclusion takes",
                r.err().strip());
        assertFalse(Files.exists(tmp.resolve("y").resolve("config.json")));

        Path shape = recipe("{\"rules\": {\"modules\": \"*\"}}");
        r = CliRun.of("quantize", "--recipe", shape.toString(), "--in", HF.toString(), "--out", tmp.resolve("z").toString());
        assertEquals(2, r.code(), r.err());
        assertTrue(r.err().startsWith("moeport: " + shape + ": a recipe is {\"rules\": [{\"modules\": GLOB, \"format\": FORMAT}, ...]}"), r.err());

        r = CliRun.of("quantize", "--recipe", expertsNvfp4AttentionFp8().toString(), "--format", "fp8", "--in", HF.toString(), "--out", tmp.resolve("w").toString());
        assertEquals(2, r.code(), r.err());
        assertTrue(r.err().startsWith("moeport: --recipe gives each module its format; give it or --format, not both"), r.err());
    }
}
