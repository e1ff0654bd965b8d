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

/** A dry run says what a run will do: decoding and transposing are named, and input bytes are the bytes read. */
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
