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
        JsonNode group = q.get("config_groups").get("group_0");
        assertEquals("nvfp4-pack-quantized", group.get("format").asText());
        assertEquals("[\"Linear\"]", group.get("targets").toString());
        JsonNode a = group.get("weights");
        assertEquals(4, a.get("num_bits").asInt());
        assertEquals("float", a.get("type").asText());
        assertEquals("tensor_group", a.get("strategy").asText());
        assertEquals(16, a.get("group_size").asInt());
        assertTrue(a.get("symmetric").asBoolean());
        assertFalse(a.get("dynamic").asBoolean());
        // No calibrated input scale: NVFP4A16's weights alone (quant_scheme.py lines 166-177).
        assertTrue(group.get("input_activations").isNull(), group.toString());
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
        JsonNode group = new ObjectMapper().readTree(ct.resolve("config.json").toFile()).get("quantization_config").get("config_groups").get("group_0");
        assertEquals("float-quantized", group.get("format").asText());
        assertEquals("tensor", group.get("weights").get("strategy").asText());
        assertEquals(8, group.get("weights").get("num_bits").asInt());
        // No calibrated input scale: FP8_DYNAMIC's per-token dynamic activations.
        assertEquals("token", group.get("input_activations").get("strategy").asText());
        assertTrue(group.get("input_activations").get("dynamic").asBoolean());
    }

    @Test
    void otherFormatsAreRefusedInOneLine() {
        CliRun r = CliRun.of("quantize", "--format", "int8_wo", "--flavor", "compressed-tensors", "--in", HF.toString(), "--out", tmp.resolve("x").toString());
        assertEquals(2, r.code(), r.err());
        assertTrue(r.err().startsWith("moeport: --flavor compressed-tensors has no form for int8_wo (it writes fp8, fp8_pc, fp8_pb, nvfp4, mxfp4)"), r.err());
    }

    /**
     * A QuantizationArgs as compressed-tensors 0.18.0 dumps it (src/compressed_tensors/quantization/quant_args.py): the
     * fields of lines 193-216 with the preset's values; {@code observer} as the validator of lines 365-399 sets it
     * (none when dynamic, {@code minmax} when "local" without one, else {@code memoryless_minmax}); {@code zp_dtype}
     * null, its serializer (lines 218-222) dropping it when symmetric; {@code scale_dtype} as {@code str(torch dtype)}
     * (utils/type.py line 52). Keys sorted, as ModelCompressor.update_config writes them (sort_keys=True).
     */
    private static String args(int bits, String strategy, String dynamic, String groupSize, String block, String scaleDtype, String observer) {
        return "{\"actorder\":null,\"block_structure\":" + block + ",\"dynamic\":" + dynamic + ",\"group_size\":" + groupSize
                + ",\"num_bits\":" + bits + ",\"observer\":" + observer + ",\"observer_kwargs\":{},\"scale_dtype\":" + scaleDtype
                + ",\"strategy\":\"" + strategy + "\",\"symmetric\":true,\"type\":\"float\",\"zp_dtype\":null}";
    }

    private static final String NONE = "null";
    private static final String STATIC_OBSERVER = "\"memoryless_minmax\"";

    /** The config group moeport writes for {@code format} (uncalibrated inputs), against the preset of quant_scheme.py it follows. */
    @org.junit.jupiter.params.ParameterizedTest
    @org.junit.jupiter.params.provider.CsvSource(delimiter = '|', value = {
        // FP8 weights (quant_scheme.py lines 346-353) with FP8_DYNAMIC's per-token dynamic inputs (lines 373-379)
        "fp8|float-quantized|tensor|-|-|-|token|false|-",
        // FP8_DYNAMIC, lines 365-380
        "fp8_pc|float-quantized|channel|-|-|-|token|false|-",
        // FP8_BLOCK, lines 385-402
        "fp8_pb|float-quantized|block|-|[128,128]|-|group|false|128",
        // NVFP4A16, lines 166-177 (no calibrated input scale): NVFP4's weights, E4M3 scales, no input quantization
        "nvfp4|nvfp4-pack-quantized|tensor_group|16|-|\"torch.float8_e4m3fn\"|-|false|-",
        // MXFP4, lines 217-238: uint8 (E8M0) scales, inputs MXFP4 dynamic
        "mxfp4|mxfp4-pack-quantized|group|32|-|\"torch.uint8\"|group|false|32",
    })
    void configGroupIsThePresetAsPydanticDumpsIt(String format, String compression, String strategy, String group, String block, String scaleDtype,
                                                 String inputStrategy, boolean local, String inputGroup) throws Exception {
        Path ct = CliRun.succeeding("quantize", "--format", format, "--flavor", "compressed-tensors", "--in", HF.toString(), "--out", tmp.resolve("ct").toString());
        JsonNode q = new ObjectMapper().readTree(ct.resolve("config.json").toFile()).get("quantization_config");
        String groupSize = group.equals("-") ? NONE : group;
        String scale = scaleDtype.equals("-") ? NONE : scaleDtype;
        String weights = args(format.equals("nvfp4") || format.equals("mxfp4") ? 4 : 8, strategy, "false", groupSize, block.equals("-") ? NONE : block, scale,
                STATIC_OBSERVER);
        String inputs = inputStrategy.equals("-") ? NONE : args(format.equals("nvfp4") || format.equals("mxfp4") ? 4 : 8, inputStrategy,
                local ? "\"local\"" : "true", inputGroup.equals("-") ? NONE : inputGroup, NONE, scale, local ? "\"static_minmax\"" : NONE);
        ObjectMapper json = new ObjectMapper();
        // QuantizationScheme's fields (quant_scheme.py lines 39-43).
        JsonNode expectedGroup = json.readTree("{\"format\":\"" + compression + "\",\"input_activations\":" + inputs
                + ",\"output_activations\":null,\"targets\":[\"Linear\"],\"weights\":" + weights + "}");
        assertEquals(expectedGroup, q.get("config_groups").get("group_0"));
        // QuantizationConfig's dump (quant_config.py lines 157-166; run_compressed excluded) with what
        // ModelCompressor.update_config adds (compressors/model_compressors/model_compressor.py lines 236-242).
        List<String> keys = new ArrayList<>();
        q.fieldNames().forEachRemaining(keys::add);
        assertEquals(List.of("config_groups", "format", "global_compression_ratio", "ignore", "kv_cache_scheme", "quant_method",
                "quantization_status", "sparsity_config", "transform_config", "version"), keys);
        assertEquals(compression, q.get("format").asText());
        assertEquals("{}", q.get("sparsity_config").toString());
        assertEquals("0.18.0", q.get("version").asText());
        assertEquals(0, CliRun.of("check", ct.toString()).code(), CliRun.of("check", ct.toString()).out());
    }

    /**
     * NVFP4 with every input calibrated: the NVFP4 preset's locally dynamic inputs (quant_scheme.py lines 191-201) and
     * each module's {@code input_global_scale}, the reciprocal of Model Optimizer's {@code input_scale} = amax / (6 * 448)
     * (converters/modelopt_nvfp4.py lines 55-61).
     */
    @Test
    void calibratedNvfp4HasLocallyDynamicInputsUnderTheirGlobalScale() throws Exception {
        Path calibrated = dev.moeport.testing.TestCheckpoints.withInputAmax(HF, tmp.resolve("hf-calibrated"), 4.0f);
        Path ct = CliRun.succeeding("quantize", "--format", "nvfp4", "--flavor", "compressed-tensors", "--in", calibrated.toString(),
                "--out", tmp.resolve("ct").toString());
        JsonNode group = new ObjectMapper().readTree(ct.resolve("config.json").toFile()).at("/quantization_config/config_groups/group_0");
        assertEquals(new ObjectMapper().readTree(args(4, "tensor_group", "\"local\"", "16", NONE, "\"torch.float8_e4m3fn\"", "\"static_minmax\"")),
                group.get("input_activations"));
        try (Checkpoint c = Checkpoints.open(ct); Arena arena = Arena.ofConfined()) {
            for (String module : List.of("model.layers.0.self_attn.q_proj", "model.layers.1.mlp.experts.3.down_proj")) {
                assertEquals(1f / (4.0f / (6.0f * 448.0f)), c.tensor(module + ".input_global_scale").bytes(arena).get(F32, 0), module);
                assertFalse(c.contains(module + ".input_scale"), module);
            }
        }
    }

    /**
     * fp8_pc, fp8_pb and mxfp4: Model Optimizer's bytes under compressed-tensors' names and shapes; the channel scales as a
     * column {@code [out, 1]} (lifecycle/initialize.py lines 205-209), the blocks' {@code [ceil(out/128), ceil(in/128)]}
     * (lines 228-240), MXFP4's {@code weight_packed} and uint8 {@code weight_scale} without a global scale
     * (compressors/mxfp4/base.py lines 35-43). dequantize and import read them to what they read from the modelopt flavor.
     */
    @org.junit.jupiter.params.ParameterizedTest
    @org.junit.jupiter.params.provider.ValueSource(strings = {"fp8_pc", "fp8_pb", "mxfp4"})
    void modelOptimizersBytesUnderCompressedTensorsNames(String format) throws Exception {
        Path ct = CliRun.succeeding("quantize", "--format", format, "--flavor", "compressed-tensors", "--in", HF.toString(), "--out", tmp.resolve("ct").toString());
        Path mo = CliRun.succeeding("quantize", "--format", format, "--in", HF.toString(), "--out", tmp.resolve("mo").toString());
        String weight = format.equals("mxfp4") ? ".weight_packed" : ".weight";
        int modules = 0;
        try (Checkpoint c = Checkpoints.open(ct); Checkpoint m = Checkpoints.open(mo); Arena arena = Arena.ofConfined()) {
            for (String name : m.tensors().keySet()) {
                if (!name.endsWith(".weight_scale")) {
                    continue;
                }
                String module = name.substring(0, name.length() - ".weight_scale".length());
                assertArrayEquals(bytes(m, module + ".weight", arena), bytes(c, module + weight, arena), module);
                assertArrayEquals(bytes(m, name, arena), bytes(c, name, arena), module);
                long[] expected = m.tensor(name).shape().toArray();
                if (format.equals("fp8_pc")) {
                    expected = java.util.Arrays.copyOf(expected, expected.length + 1);
                    expected[expected.length - 1] = 1;
                } else if (format.equals("fp8_pb")) {
                    // Model Optimizer's flavor stores the grid as [rows, 1, cols, 1] (QuantizeCommandTest), compressed-tensors as [rows, cols].
                    expected = new long[] {expected[0], expected[2]};
                }
                assertArrayEquals(expected, c.tensor(name).shape().toArray(), module);
                assertEquals(m.tensor(name).dtype(), c.tensor(name).dtype(), module);
                modules++;
            }
            assertEquals(m.tensors().size(), c.tensors().size());
        }
        assertTrue(modules > 50, "modules compared: " + modules);
        assertSameTensors(CliRun.succeeding("dequantize", "--in", mo.toString(), "--out", tmp.resolve("dm").toString()),
                CliRun.succeeding("dequantize", "--in", ct.toString(), "--out", tmp.resolve("dc").toString()));
        assertSameTensors(CliRun.succeeding("import", "--ckpt-format", "safetensors", "--in", mo.toString(), "--out", tmp.resolve("im").toString()),
                CliRun.succeeding("import", "--ckpt-format", "safetensors", "--in", ct.toString(), "--out", tmp.resolve("ic").toString()));
    }
}
