package dev.moeport.convert;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.moeport.cli.CliRun;
import dev.moeport.format.Checkpoint;
import dev.moeport.format.Checkpoints;
import dev.moeport.tensor.Tensor;
import dev.moeport.testing.Shared;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** A dry run says what a run will do: decoding, transposing, shared amaxes and the other files are named, and input bytes are the bytes read. */
class PlanTruthTest {
    @TempDir
    Path tmp;

    private static JsonNode dryRun(String... args) throws Exception {
        CliRun r = CliRun.of(args);
        assertEquals(0, r.code(), r.err());
        return new ObjectMapper().readTree(r.out());
    }

    @Test
    void importOfAQuantizedCheckpointNamesTheDecodingAndReadsItsBytesOnce() throws Exception {
        Path nvfp4 = CliRun.succeeding("quantize", "--format", "nvfp4", "--in", Shared.fixture("qwen3_moe").resolve("hf").toString(),
                "--out", tmp.resolve("n").toString());
        long stored;
        try (Checkpoint c = Checkpoints.open(nvfp4)) {
            stored = c.tensors().values().stream().mapToLong(Tensor::byteSize).sum();
        }
        JsonNode plan = dryRun("import", "--in", nvfp4.toString(), "--out", tmp.resolve("m").toString(), "--dry-run", "--json");
        // Every tensor of the input is read once (packed weights with their scales, the rest as they are), except that a
        // per-tensor scale is read again for each slice of a fused q/k/v (4 bytes each); decoded bytes are not input.
        long input = plan.get("input_bytes").asLong();
        assertTrue(input >= stored && input <= stored + stored / 1000, input + " bytes of input for " + stored + " stored");
        int decoded = 0;
        for (JsonNode t : plan.get("tensors")) {
            if (t.get("name").asText().equals("decoder.layers.1.mlp.experts.linear_fc2.weight")
                    || t.get("name").asText().equals("decoder.layers.0.self_attention.linear_proj.weight")) {
                assertEquals("decode nvfp4", t.get("transform").asText(), t.toString());
            }
            decoded += t.get("transform").asText().contains("decode nvfp4") ? 1 : 0;
        }
        assertTrue(decoded >= 10, "decoded tensors named: " + decoded);
    }

    /**
     * q/k/v of one attention and gate/up of one expert must carry one per-tensor scale (engines fuse them into one
     * GEMM): the plan lists each group's amax once, over exactly the group's weights, and its jobs say they use it.
     * Formats without a per-tensor scale have none.
     */
    @Test
    void sharedAmaxesAreInThePlanOncePerGroupOfFusedSiblings() throws Exception {
        String hf = Shared.fixture("qwen3_moe").resolve("hf").toString();
        JsonNode plan = dryRun("quantize", "--format", "nvfp4", "--in", hf, "--out", tmp.resolve("n").toString(), "--dry-run", "--json");
        java.util.Map<String, java.util.List<String>> groups = new java.util.HashMap<>();
        for (JsonNode a : plan.get("shared_amaxes")) {
            java.util.List<String> sources = new java.util.ArrayList<>();
            a.get("sources").forEach(n -> sources.add(n.asText()));
            assertEquals(null, groups.put(a.get("key").asText(), sources), "one entry per group: " + a);
        }
        String attention = "model.layers.0.self_attn.";
        assertEquals(java.util.List.of(attention + "q_proj.weight", attention + "k_proj.weight", attention + "v_proj.weight"),
                groups.get(attention + "q_proj.weight+" + attention + "k_proj.weight+" + attention + "v_proj.weight"), groups.keySet().toString());
        String expert = "model.layers.1.mlp.experts.3.";
        assertEquals(java.util.List.of(expert + "gate_proj.weight", expert + "up_proj.weight"),
                groups.get(expert + "gate_proj.weight+" + expert + "up_proj.weight"), groups.keySet().toString());
        for (JsonNode t : plan.get("tensors")) {
            String name = t.get("name").asText();
            if (name.equals(attention + "k_proj.weight") || name.equals(expert + "up_proj.weight")) {
                assertEquals("quantize nvfp4, shared amax", t.get("transform").asText(), t.toString());
            }
            if (name.equals(attention + "o_proj.weight")) {
                assertEquals("quantize nvfp4", t.get("transform").asText(), t.toString());
            }
        }
        JsonNode local = dryRun("quantize", "--format", "mxfp4", "--in", hf, "--out", tmp.resolve("m").toString(), "--dry-run", "--json");
        assertEquals(0, local.get("shared_amaxes").size(), "mxfp4 has no per-tensor scale to share");
    }

    /**
     * The files besides the weights are in the plan: the model folder's generation_config.json copied (its size on
     * disk, read as input), config.json and hf_quant_config.json written; the run then writes exactly those.
     */
    @Test
    void copiedAndWrittenFilesAreInThePlanAndItsInputBytes() throws Exception {
        Path hf = Shared.fixture("qwen3_moe").resolve("hf");
        String[] run = {"quantize", "--format", "fp8", "--in", hf.toString(), "--out", tmp.resolve("q").toString(), "--json"};
        JsonNode plan = dryRun(java.util.stream.Stream.concat(java.util.Arrays.stream(run), java.util.stream.Stream.of("--dry-run"))
                .toArray(String[]::new));
        java.util.Map<String, JsonNode> files = new java.util.TreeMap<>();
        plan.get("files").forEach(f -> files.put(f.get("name").asText(), f));
        assertEquals(java.util.Set.of("config.json", "generation_config.json", "hf_quant_config.json"), files.keySet());
        Path generation = hf.resolve("generation_config.json");
        assertEquals(generation.toString(), files.get("generation_config.json").get("source").asText());
        assertEquals(java.nio.file.Files.size(generation), files.get("generation_config.json").get("bytes").asLong());
        assertTrue(files.get("config.json").get("source").isNull(), "config.json is written, not copied");
        long stored;
        try (Checkpoint c = Checkpoints.open(hf)) {
            stored = c.tensors().values().stream().mapToLong(Tensor::byteSize).sum();
        }
        assertEquals(stored + java.nio.file.Files.size(generation), plan.get("input_bytes").asLong(), "every tensor and the copied file, once");

        CliRun done = CliRun.of(run);
        assertEquals(0, done.code(), done.err());
        JsonNode summary = new ObjectMapper().readTree(done.out());
        java.util.Set<String> written = new java.util.TreeSet<>();
        summary.get("other_files").forEach(n -> written.add(n.asText()));
        assertEquals(files.keySet(), written);
        assertEquals(java.nio.file.Files.readString(generation), java.nio.file.Files.readString(tmp.resolve("q").resolve("generation_config.json")));
        assertTrue(summary.get("kernel").asText().length() > 0, "a quantizing run names its kernel: " + summary);
    }

    @Test
    void gptOssTransposedExpertsSayTheyAreTransposed() throws Exception {
        JsonNode plan = dryRun("import", "--in", Shared.fixture("gpt_oss").resolve("hf").toString(), "--out", tmp.resolve("g").toString(),
                "--dry-run", "--json");
        boolean transposed = false;
        for (JsonNode t : plan.get("tensors")) {
            transposed |= t.get("name").asText().contains("experts") && t.get("transform").asText().contains("transpose");
        }
        assertTrue(transposed, plan.get("tensors").toString());
    }
}
