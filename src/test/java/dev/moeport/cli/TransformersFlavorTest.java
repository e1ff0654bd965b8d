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
import dev.moeport.tensor.DType;
import dev.moeport.tensor.Shape;
import dev.moeport.testing.Shared;
import java.lang.foreign.Arena;
import java.lang.foreign.ValueLayout;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code --flavor transformers}: fp8_pb in the fine-grained FP8 layout DeepSeek-V3 publishes and transformers loads
 * ({@code ../shared/spec/ENGINES.md}: an E4M3 {@code weight}, an f32 {@code weight_scale_inv} per 128 x 128 block,
 * {@code quantization_config} {@code quant_method: fp8, fmt: e4m3, activation_scheme: dynamic, weight_block_size: [128, 128]}).
 */
class TransformersFlavorTest {
    private static final Path HF = Shared.fixture("qwen3_moe").resolve("hf");

    @TempDir
    Path tmp;

    @Test
    void fp8BlocksInDeepSeeksPublishedLayout() throws Exception {
        Path t = CliRun.succeeding("quantize", "--format", "fp8_pb", "--flavor", "transformers", "--in", HF.toString(), "--out", tmp.resolve("t").toString());
        Path m = CliRun.succeeding("quantize", "--format", "fp8_pb", "--in", HF.toString(), "--out", tmp.resolve("m").toString());
        JsonNode q = new ObjectMapper().readTree(t.resolve("config.json").toFile()).get("quantization_config");
        assertEquals("fp8", q.get("quant_method").asText());
        assertEquals("e4m3", q.get("fmt").asText());
        assertEquals("dynamic", q.get("activation_scheme").asText());
        assertEquals("[128,128]", q.get("weight_block_size").toString());
        List<String> kept = new ArrayList<>();
        q.get("modules_to_not_convert").forEach(n -> kept.add(n.asText()));
        assertTrue(kept.containsAll(List.of("lm_head", "model.layers.1.mlp.gate")), kept.toString());
        assertFalse(Files.exists(t.resolve("hf_quant_config.json")), "Model Optimizer's file belongs to the modelopt flavor");
        int modules = 0;
        try (Checkpoint ct = Checkpoints.open(t); Checkpoint cm = Checkpoints.open(m); Arena arena = Arena.ofConfined()) {
            for (String name : cm.tensors().keySet()) {
                if (!name.endsWith(".weight_scale")) {
                    continue;
                }
                String module = name.substring(0, name.length() - ".weight_scale".length());
                var weight = ct.tensor(module + ".weight");
                var scaleInv = ct.tensor(module + ".weight_scale_inv");
                assertFalse(ct.contains(name), "no weight_scale beside weight_scale_inv: " + module);
                assertEquals(DType.F8_E4M3, weight.dtype());
                assertEquals(DType.F32, scaleInv.dtype());
                long out = weight.shape().dim(0);
                long in = weight.shape().dim(1);
                assertEquals(Shape.of((out + 127) / 128, (in + 127) / 128), scaleInv.shape(), module);
                // The same numbers under the other name: Model Optimizer's fp8_pb scale is the multiplier DeepSeek calls scale_inv.
                assertArrayEquals(cm.tensor(module + ".weight").bytes(arena).toArray(ValueLayout.JAVA_BYTE), weight.bytes(arena).toArray(ValueLayout.JAVA_BYTE));
                assertArrayEquals(cm.tensor(name).bytes(arena).toArray(ValueLayout.JAVA_BYTE), scaleInv.bytes(arena).toArray(ValueLayout.JAVA_BYTE));
                modules++;
            }
        }
        assertTrue(modules > 50, "quantized modules compared: " + modules);
        // Read back as DeepSeek's layout, it decodes to what the modelopt flavor decodes to.
        Path dt = CliRun.succeeding("dequantize", "--in", t.toString(), "--out", tmp.resolve("dt").toString());
        Path dm = CliRun.succeeding("dequantize", "--in", m.toString(), "--out", tmp.resolve("dm").toString());
        assertSameTensors(dm, dt);
    }

    @Test
    void formatsTransformersCannotLoadAreRefusedInOneLine() {
        for (String format : List.of("nvfp4", "fp8", "mxfp4")) {
            CliRun r = CliRun.of("quantize", "--format", format, "--flavor", "transformers", "--in", HF.toString(), "--out", tmp.resolve(format).toString());
            assertEquals(2, r.code(), r.err());
            assertTrue(r.err().startsWith("moeport: --flavor transformers writes fp8_pb"), r.err());
            assertFalse(Files.exists(tmp.resolve(format)));
        }
        assertEquals(2, CliRun.of("quantize", "--format", "fp8_pb", "--flavor", "vllm", "--in", HF.toString(), "--out", tmp.resolve("v").toString()).code());
    }
}
