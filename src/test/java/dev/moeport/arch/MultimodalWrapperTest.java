package dev.moeport.arch;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.moeport.cli.CliRun;
import dev.moeport.format.Checkpoint;
import dev.moeport.format.Checkpoints;
import dev.moeport.tensor.DType;
import dev.moeport.tensor.Shape;
import dev.moeport.testing.Shared;
import dev.moeport.testing.TestCheckpoints;
import java.io.InputStream;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Random;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.function.UnaryOperator;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * The published forms of Llama 4 and Qwen3.5 MoE: multimodal wrappers of the text models of the fixtures. Each test builds
 * the wrapper from the fixture here, renaming tensors as transformers names them and nesting config.json under
 * {@code text_config}, with a few vision tensors beside; the names are those transformers 5.17 wrote for real tiny wrappers
 * of these fixtures ({@code scripts/multimodal_wrappers.py}, its lists in {@code src/test/resources/multimodal/}). Every
 * command on the wrapper must give the plain fixture's result under the wrapper's names, and the vision tensors untouched.
 */
class MultimodalWrapperTest {
    @TempDir
    Path tmp;

    private static final ObjectMapper JSON = new ObjectMapper();

    /**
     * A wrapper of a fixture: its class, how transformers names the text model's tensors in it
     * (modeling_llama4.py: Llama4ForConditionalGeneration.language_model is a Llama4ForCausalLM; modeling_qwen3_5_moe.py:
     * Qwen3_5MoeModel.language_model is the text model, lm_head stays at the top), and vision tensors as transformers
     * names them (from the lists the script wrote), with their shapes.
     */
    private record Wrapped(String fixture, String hfClass, String modelType, UnaryOperator<String> rename, Map<String, Shape> vision) {}

    private static final Wrapped LLAMA4 = new Wrapped("llama4", "Llama4ForConditionalGeneration", "llama4", n -> "language_model." + n,
            Map.of("vision_model.model.layers.0.self_attn.q_proj.weight", Shape.of(32, 32),
                    "vision_model.layernorm_pre.weight", Shape.of(32),
                    "multi_modal_projector.linear_1.weight", Shape.of(128, 64)));

    private static final Wrapped QWEN3_5_MOE = new Wrapped("qwen3_5_moe", "Qwen3_5MoeForConditionalGeneration", "qwen3_5_moe",
            n -> n.startsWith("model.") ? "model.language_model." + n.substring("model.".length()) : n,
            Map.of("model.visual.blocks.0.attn.qkv.weight", Shape.of(96, 32),
                    "model.visual.blocks.0.norm1.weight", Shape.of(32),
                    "model.visual.merger.linear_fc1.weight", Shape.of(128, 128)));

    private static Path fixture(Wrapped w) {
        return Shared.fixture(w.fixture()).resolve("hf");
    }

    /** The wrapper checkpoint of {@code w}: the fixture's tensors renamed, vision tensors of seeded random BF16 values. */
    private Path wrapper(Wrapped w, String folder) throws Exception {
        Path out = tmp.resolve(folder);
        try (Checkpoint plain = Checkpoints.open(fixture(w))) {
            List<TestCheckpoints.Entry> entries = new ArrayList<>();
            plain.tensors().forEach((name, t) -> entries.add(new TestCheckpoints.Entry(w.rename().apply(name), t.shape(), List.of(t))));
            Random random = new Random(11);
            new TreeMap<>(w.vision()).forEach((name, shape) -> {
                ByteBuffer bytes = ByteBuffer.allocate((int) shape.numel() * 2).order(ByteOrder.LITTLE_ENDIAN);
                for (long i = 0; i < shape.numel(); i++) {
                    bytes.putShort((short) (Float.floatToIntBits((float) random.nextGaussian() * 0.02f) >>> 16));
                }
                entries.add(TestCheckpoints.Entry.of(name, TestCheckpoints.bytes(name, DType.BF16, shape, bytes.array())));
            });
            TestCheckpoints.write(out, entries, 1L << 30);
        }
        writeConfig(w, out);
        return out;
    }

    /** config.json as transformers writes a wrapper's: the text model's config nested under text_config. */
    private static void writeConfig(Wrapped w, Path out) throws Exception {
        ObjectNode text = (ObjectNode) JSON.readTree(fixture(w).resolve("config.json").toFile());
        text.remove(List.of("architectures", "transformers_version", "dtype"));
        ObjectNode config = JSON.createObjectNode();
        config.putArray("architectures").add(w.hfClass());
        config.put("model_type", w.modelType());
        config.put("dtype", "bfloat16");
        config.set("text_config", text);
        config.putObject("vision_config").put("hidden_size", 32);
        config.put("tie_word_embeddings", false);
        Files.createDirectories(out);
        JSON.writeValue(out.resolve("config.json").toFile(), config);
    }

    private static JsonNode transformersNames(Wrapped w) throws Exception {
        try (InputStream in = MultimodalWrapperTest.class.getResourceAsStream("/multimodal/" + w.fixture() + ".names.json")) {
            return JSON.readTree(in);
        }
    }

    /** {@code actual} holds every tensor of {@code plain} under the wrapper's name, byte for byte, and nothing else but {@code others}. */
    private static void assertWrappedResult(Wrapped w, Path plain, Path actual, Path others) {
        try (Checkpoint p = Checkpoints.open(plain); Checkpoint a = Checkpoints.open(actual); Checkpoint o = Checkpoints.open(others)) {
            TreeSet<String> expected = new TreeSet<>();
            p.tensors().keySet().forEach(n -> expected.add(w.rename().apply(n)));
            expected.addAll(w.vision().keySet());
            assertEquals(expected, new TreeSet<>(a.tensors().keySet()), "tensor names");
            p.tensors().forEach((name, t) -> TestCheckpoints.assertSameTensor(t, a.tensor(w.rename().apply(name))));
            w.vision().keySet().forEach(name -> TestCheckpoints.assertSameTensor(o.tensor(name), a.tensor(name)));
        }
    }

    /** The wrappers the tests build name every tensor as transformers' save_pretrained does, with the same shapes. */
    @Test
    void theTestWrappersHaveTransformersNames() throws Exception {
        for (Wrapped w : List.of(LLAMA4, QWEN3_5_MOE)) {
            JsonNode names = transformersNames(w);
            assertEquals(w.hfClass(), names.get("architectures").get(0).asText());
            assertTrue(names.get("config_keys").toString().contains("\"text_config\""), w.fixture());
            Map<String, List<Long>> saved = new TreeMap<>();
            names.get("tensors").properties().forEach(e -> {
                List<Long> dims = new ArrayList<>();
                e.getValue().forEach(d -> dims.add(d.asLong()));
                saved.put(e.getKey(), dims);
            });
            Path built = wrapper(w, w.fixture());
            try (Checkpoint c = Checkpoints.open(built)) {
                c.tensors().forEach((name, t) -> assertEquals(saved.get(name), java.util.Arrays.stream(t.shape().toArray()).boxed().toList(), name));
                // transformers' language tensors are exactly the fixture's, renamed.
                TreeSet<String> language = new TreeSet<>(saved.keySet());
                language.removeIf(n -> n.startsWith("vision_model.") || n.startsWith("multi_modal_projector.") || n.startsWith("model.visual."));
                TreeSet<String> builtLanguage = new TreeSet<>(c.tensors().keySet());
                builtLanguage.removeAll(w.vision().keySet());
                assertEquals(language, builtLanguage, w.fixture());
            }
        }
    }

    /**
     * import reads the language model: the plain fixture's Megatron-Core tensors (a GPT model's names, as Megatron-Core's
     * text model; Megatron-Bridge's Qwen3VLModel nests the same under {@code language_model.}), and one line on the vision
     * tensors.
     */
    @Test
    void importGivesThePlainModelsTensorsAndSaysWhatItLeft() throws Exception {
        for (Wrapped w : List.of(LLAMA4, QWEN3_5_MOE)) {
            Path wrapped = wrapper(w, w.fixture());
            Path plainOut = CliRun.succeeding("import", "--ckpt-format", "safetensors", "--in", fixture(w).toString(), "--out",
                    tmp.resolve(w.fixture() + "-plain-mcore").toString());
            CliRun run = CliRun.of("import", "--ckpt-format", "safetensors", "--in", wrapped.toString(), "--out",
                    tmp.resolve(w.fixture() + "-mcore").toString());
            assertEquals(0, run.code(), run.err());
            assertTrue(run.out().contains("not imported (export copies them back from --hf-config): 3 tensor(s) of " + w.hfClass()
                    + " outside its language model"), run.out());
            TestCheckpoints.assertSameTensors(plainOut, tmp.resolve(w.fixture() + "-mcore"));
            // verify compares the language model with the wrapper's, leaving the vision tensors out.
            CliRun verify = CliRun.of("verify", tmp.resolve(w.fixture() + "-mcore").toString(), wrapped.toString());
            assertEquals(0, verify.code(), verify.out() + verify.err());
            assertTrue(verify.out().contains("3 entries not compared"), verify.out());

            // Export with the wrapper as --hf-config gives the wrapper back: the language model from Megatron-Core,
            // the vision tensors copied from --hf-config.
            Path back = CliRun.succeeding("export", "--in", tmp.resolve(w.fixture() + "-mcore").toString(), "--hf-config", wrapped.toString(),
                    "--out", tmp.resolve(w.fixture() + "-back").toString());
            TestCheckpoints.assertSameTensors(wrapped, back);
            assertEquals(JSON.readTree(wrapped.resolve("config.json").toFile()), JSON.readTree(back.resolve("config.json").toFile()));
        }
    }

    /** With only the wrapper's config.json as --hf-config, export writes the language model and says so. */
    @Test
    void exportWithoutTheVisionWeightsSaysTheOutputIsTheLanguageModel() throws Exception {
        Path wrapped = wrapper(QWEN3_5_MOE, "wrapped");
        Path configOnly = Files.createDirectories(tmp.resolve("config-only"));
        Files.copy(wrapped.resolve("config.json"), configOnly.resolve("config.json"));
        Path mcore = CliRun.succeeding("import", "--ckpt-format", "safetensors", "--in", wrapped.toString(), "--out", tmp.resolve("mcore").toString());
        CliRun run = CliRun.of("export", "--in", mcore.toString(), "--hf-config", configOnly.toString(), "--out", tmp.resolve("hf").toString());
        assertEquals(0, run.code(), run.err());
        assertTrue(run.out().contains("no model.visual.* tensors in " + configOnly + " to copy: the output holds the language model of "
                + QWEN3_5_MOE.hfClass() + " only"), run.out());
        try (Checkpoint out = Checkpoints.open(tmp.resolve("hf")); Checkpoint in = Checkpoints.open(wrapped)) {
            TreeSet<String> language = new TreeSet<>(in.tensors().keySet());
            language.removeAll(QWEN3_5_MOE.vision().keySet());
            assertEquals(language, new TreeSet<>(out.tensors().keySet()));
        }
    }

    /**
     * quantize quantizes the language model as it does the plain fixture (every output tensor the same bytes under the
     * wrapper's name) and copies the vision tensors untouched, as Model Optimizer's hf_ptq disables every quantizer
     * outside the language model (examples/hf_ptq/hf_ptq.py, extract_and_prepare_language_model_from_vl).
     */
    @Test
    void quantizeQuantizesTheLanguageModelOnly() throws Exception {
        for (Wrapped w : List.of(LLAMA4, QWEN3_5_MOE)) {
            Path wrapped = wrapper(w, w.fixture());
            Path plain = CliRun.succeeding("quantize", "--format", "nvfp4", "--in", fixture(w).toString(), "--out",
                    tmp.resolve(w.fixture() + "-plain-nvfp4").toString());
            CliRun run = CliRun.of("quantize", "--format", "nvfp4", "--in", wrapped.toString(), "--out", tmp.resolve(w.fixture() + "-nvfp4").toString());
            assertEquals(0, run.code(), run.err());
            assertTrue(run.out().contains("copied unquantized: 3 tensor(s) of " + w.hfClass()), run.out());
            assertWrappedResult(w, plain, tmp.resolve(w.fixture() + "-nvfp4"), wrapped);
            JsonNode config = JSON.readTree(tmp.resolve(w.fixture() + "-nvfp4").resolve("config.json").toFile());
            assertEquals(w.hfClass(), config.get("architectures").get(0).asText());
            assertTrue(config.has("quantization_config") && config.has("text_config"), config.toString());
            assertFalse(config.get("text_config").has("quantization_config"), config.toString());
        }
    }

    /**
     * Qwen3.5's experts fused (as the published checkpoints hold them) and back, in the wrapper as in the plain fixture;
     * the vision tensors as they are.
     */
    @Test
    void convertFusesTheLanguageModelsExperts() throws Exception {
        Path wrapped = wrapper(QWEN3_5_MOE, "wrapped");
        Path plainFused = CliRun.succeeding("convert", "--experts", "fused", "--in", fixture(QWEN3_5_MOE).toString(), "--out",
                tmp.resolve("plain-fused").toString());
        Path fused = CliRun.succeeding("convert", "--experts", "fused", "--in", wrapped.toString(), "--out", tmp.resolve("fused").toString());
        assertWrappedResult(QWEN3_5_MOE, plainFused, fused, wrapped);
        try (Checkpoint c = Checkpoints.open(fused)) {
            assertTrue(c.tensors().containsKey("model.language_model.layers.0.mlp.experts.gate_up_proj"));
        }
        Path back = CliRun.succeeding("convert", "--experts", "per-expert", "--in", fused.toString(), "--out", tmp.resolve("back").toString());
        TestCheckpoints.assertSameTensors(wrapped, back);
        // The published layout (fused experts in the wrapper) imports as the plain fixture does.
        Path plainMcore = CliRun.succeeding("import", "--ckpt-format", "safetensors", "--in", fixture(QWEN3_5_MOE).toString(), "--out",
                tmp.resolve("plain-mcore").toString());
        Path fusedMcore = CliRun.succeeding("import", "--ckpt-format", "safetensors", "--in", fused.toString(), "--out",
                tmp.resolve("fused-mcore").toString());
        TestCheckpoints.assertSameTensors(plainMcore, fusedMcore);
    }

    /** --arch names the text model; with a wrapper's config it means the wrapper, and another architecture is refused. */
    @Test
    void archOfAWrapperConfig() throws Exception {
        Path wrapped = wrapper(LLAMA4, "wrapped");
        Path mcore = CliRun.succeeding("import", "--arch", "llama4", "--ckpt-format", "safetensors", "--in", wrapped.toString(), "--out",
                tmp.resolve("mcore").toString());
        assertTrue(Files.exists(mcore));
        CliRun wrong = CliRun.of("import", "--arch", "qwen3_moe", "--in", wrapped.toString(), "--out", tmp.resolve("x").toString());
        assertEquals(1, wrong.code());
        assertTrue(wrong.err().contains("contradicts"), wrong.err());
        // A wrapper's config without its text model's: one line, nothing written.
        ObjectNode config = (ObjectNode) JSON.readTree(wrapped.resolve("config.json").toFile());
        config.remove("text_config");
        JSON.writeValue(wrapped.resolve("config.json").toFile(), config);
        CliRun noText = CliRun.of("import", "--in", wrapped.toString(), "--out", tmp.resolve("y").toString());
        assertEquals(1, noText.code());
        assertEquals("moeport: error: " + wrapped.resolve("config.json") + ": a Llama4ForConditionalGeneration config needs the object \"text_config\" (its text model's config)",
                noText.err().strip());
        assertFalse(Files.exists(tmp.resolve("y")));
        // A key missing from text_config is named where it is missing.
        ObjectNode text = (ObjectNode) JSON.readTree(fixture(LLAMA4).resolve("config.json").toFile());
        text.remove("num_hidden_layers");
        config.set("text_config", text);
        JSON.writeValue(wrapped.resolve("config.json").toFile(), config);
        CliRun noLayers = CliRun.of("import", "--in", wrapped.toString(), "--out", tmp.resolve("y").toString());
        assertEquals(1, noLayers.code());
        assertTrue(noLayers.err().contains("config.json: needs the integer \"text_config.num_hidden_layers\""), noLayers.err());
        CliRun list = CliRun.of("export", "--list-architectures");
        assertTrue(list.out().contains("llama4  Llama4ForCausalLM, Llama4ForConditionalGeneration"), list.out());
    }
}
