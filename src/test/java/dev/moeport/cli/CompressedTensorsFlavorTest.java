package dev.moeport.cli;

import static dev.moeport.testing.TestCheckpoints.assertSameTensors;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.moeport.format.Checkpoint;
import dev.moeport.format.Checkpoints;
import dev.moeport.testing.Shared;
import java.lang.foreign.Arena;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code --flavor compressed-tensors} for NVFP4, against compressed-tensors' own converter from Model Optimizer's
 * NVFP4 (vllm-project/compressed-tensors src/compressed_tensors/entrypoints/convert/converters/modelopt_nvfp4.py,
 * {@code process} and {@code create_config}; the preset in quantization/quant_scheme.py, {@code NVFP4}): the same
 * bytes as the modelopt flavor under {@code weight_packed}, {@code weight_scale} unchanged, {@code weight_global_scale}
 * = 1 / {@code weight_scale_2}, and one {@code nvfp4-pack-quantized} config group.
 */
class CompressedTensorsFlavorTest {
    private static final Path HF = Shared.fixture("qwen3_moe").resolve("hf");
    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);

    @TempDir
    Path tmp;

    private static byte[] bytes(Checkpoint c, String name, Arena arena) {
        return c.tensor(name).bytes(arena).toArray(ValueLayout.JAVA_BYTE);
    }

    @Test
    void nvfp4AsCompressedTensorsConvertsModelOptimizersOutput() throws Exception {
        Path ct = CliRun.succeeding("quantize", "--format", "nvfp4", "--flavor", "compressed-tensors", "--in", HF.toString(), "--out", tmp.resolve("ct").toString());
        Path mo = CliRun.succeeding("quantize", "--format", "nvfp4", "--in", HF.toString(), "--out", tmp.resolve("mo").toString());
        int modules = 0;
        try (Checkpoint c = Checkpoints.open(ct); Checkpoint m = Checkpoints.open(mo); Arena arena = Arena.ofConfined()) {
            for (String name : m.tensors().keySet()) {
                if (!name.endsWith(".weight_scale_2")) {
                    continue;
                }
                String module = name.substring(0, name.length() - ".weight_scale_2".length());
                assertArrayEquals(bytes(m, module + ".weight", arena), bytes(c, module + ".weight_packed", arena), module);
                assertArrayEquals(bytes(m, module + ".weight_scale", arena), bytes(c, module + ".weight_scale", arena), module);
                float scale2 = m.tensor(name).bytes(arena).get(F32, 0);
                assertEquals(1f / scale2, c.tensor(module + ".weight_global_scale").bytes(arena).get(F32, 0), module);
                assertFalse(c.contains(module + ".weight") || c.contains(name), module);
                modules++;
            }
        }
        assertTrue(modules > 50, "modules compared: " + modules);
        assertFalse(Files.exists(ct.resolve("hf_quant_config.json")));
        JsonNode q = new ObjectMapper().readTree(ct.resolve("config.json").toFile()).get("quantization_config");
        assertEquals("compressed-tensors", q.get("quant_method").asText());
        assertEquals("nvfp4-pack-quantized", q.get("format").asText());
        assertEquals("compressed", q.get("quantization_status").asText());
        JsonNode group = q.get("config_groups").get("config_group_0");
        assertEquals("nvfp4-pack-quantized", group.get("format").asText());
        assertEquals("[\"Linear\"]", group.get("targets").toString());
        for (String args : List.of("weights", "input_activations")) {
            JsonNode a = group.get(args);
            assertEquals(4, a.get("num_bits").asInt(), args);
            assertEquals("float", a.get("type").asText(), args);
            assertEquals("tensor_group", a.get("strategy").asText(), args);
            assertEquals(16, a.get("group_size").asInt(), args);
            assertTrue(a.get("symmetric").asBoolean(), args);
        }
        assertFalse(group.get("weights").get("dynamic").asBoolean());
        assertEquals("local", group.get("input_activations").get("dynamic").asText());
        List<String> ignore = new ArrayList<>();
        q.get("ignore").forEach(n -> ignore.add(n.asText()));
        assertTrue(ignore.containsAll(List.of("lm_head", "model.layers.1.mlp.gate")), ignore.toString());
        assertEquals(0, CliRun.of("check", ct.toString()).code(), CliRun.of("check", ct.toString()).out());
        // dequantize reads the compressed-tensors names back to the same values.
        assertSameTensors(CliRun.succeeding("dequantize", "--in", mo.toString(), "--out", tmp.resolve("dm").toString()),
                CliRun.succeeding("dequantize", "--in", ct.toString(), "--out", tmp.resolve("dc").toString()));
    }

    /** FP8 per tensor as float-quantized: Model Optimizer's names and bytes, the FP8 presets' config group (quant_scheme.py). */
    @Test
    void fp8AsFloatQuantized() throws Exception {
        Path ct = CliRun.succeeding("quantize", "--format", "fp8", "--flavor", "compressed-tensors", "--in", HF.toString(), "--out", tmp.resolve("ct").toString());
        Path mo = CliRun.succeeding("quantize", "--format", "fp8", "--in", HF.toString(), "--out", tmp.resolve("mo").toString());
        assertSameTensors(mo, ct);
        JsonNode group = new ObjectMapper().readTree(ct.resolve("config.json").toFile()).get("quantization_config").get("config_groups").get("config_group_0");
        assertEquals("float-quantized", group.get("format").asText());
        assertEquals("tensor", group.get("weights").get("strategy").asText());
        assertEquals(8, group.get("weights").get("num_bits").asInt());
        // No calibrated input scale: FP8_DYNAMIC's per-token dynamic activations.
        assertEquals("token", group.get("input_activations").get("strategy").asText());
        assertTrue(group.get("input_activations").get("dynamic").asBoolean());
    }

    @Test
    void otherFormatsAreRefusedInOneLine() {
        CliRun r = CliRun.of("quantize", "--format", "fp8_pc", "--flavor", "compressed-tensors", "--in", HF.toString(), "--out", tmp.resolve("x").toString());
        assertEquals(2, r.code(), r.err());
        assertTrue(r.err().startsWith("moeport: --flavor compressed-tensors writes nvfp4 (nvfp4-pack-quantized) and fp8"), r.err());
    }
}
