package dev.moeport.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.moeport.testing.Shared;
import java.io.RandomAccessFile;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * {@code moeport check}: every output moeport writes passes; outputs broken the way issue 12 lists (edited here by
 * hand in the safetensors bytes, independently of the code under test) fail with a line naming the tensor.
 */
class CheckCommandTest {
    private static final Path HF = Shared.fixture("qwen3_moe").resolve("hf");
    private static final String EXPERT = "model.layers.1.mlp.experts.3.";

    @TempDir
    Path tmp;

    /**
     * Every format in the modelopt flavor passes for the engines whose Model Optimizer loader reads its quant_algo, and
     * is refused in one line naming hf_quant_config.json for the others: vLLM's QUANT_ALGOS
     * (model_executor/layers/quantization/modelopt.py) hold neither W8A16, W4A16_AWQ nor mxfp4; TensorRT-LLM's QuantAlgo
     * (tensorrt_llm/quantization/mode.py) neither mxfp4, MXFP8 nor W4A16_NVFP4 (uncalibrated nvfp4).
     */
    @ParameterizedTest(name = "{0}")
    @org.junit.jupiter.params.provider.CsvSource({"fp8,trtllm,", "fp8_pc,vllm trtllm,", "fp8_pb,vllm trtllm,", "nvfp4,vllm,trtllm",
        "mxfp4,,vllm trtllm", "mxfp8,vllm,trtllm", "int8_wo,trtllm,vllm", "int4_g128,trtllm,vllm"})
    void everyFormatMoeportWritesPassesForTheEnginesThatLoadIt(String format, String loading, String refusing) {
        Path q = CliRun.succeeding("quantize", "--format", format, "--in", HF.toString(), "--out", tmp.resolve(format).toString());
        for (String engine : loading == null ? new String[0] : loading.split(" ")) {
            CliRun r = CliRun.of("check", q.toString(), "--engine", engine);
            assertEquals(0, r.code(), engine + ": " + r.out() + r.err());
        }
        for (String engine : refusing == null ? new String[0] : refusing.split(" ")) {
            CliRun r = CliRun.of("check", q.toString(), "--engine", engine);
            assertEquals(1, r.code(), engine + ": " + r.out());
            assertTrue(r.out().startsWith("hf_quant_config.json: " + engine + "'s Model Optimizer loader refuses quant_algo '"), r.out());
        }
    }

    /**
     * Model Optimizer's fp8 without calibration has no input_scale: a problem for vLLM only, one line per quantized
     * module. Its ModelOptFp8LinearMethod.create_weights fills input_scale with torch.finfo(float32).min and
     * process_weights_after_loading keeps its max; ModelOptFp8MoEMethod.create_weights fills w13/w2_input_scale with 1.0
     * (vllm model_executor/layers/quantization/modelopt.py at 00155cde). Calibrated inputs give every module one, and pass.
     */
    @Test
    void uncalibratedModelOptimizerFp8IsAProblemForVllm() throws Exception {
        Path out = tmp.resolve("fp8");
        CliRun quantize = CliRun.of("quantize", "--format", "fp8", "--in", HF.toString(), "--out", out.toString());
        assertEquals(0, quantize.code(), quantize.err());
        assertTrue((quantize.out() + quantize.err()).contains("--keep-quantized, or write --flavor compressed-tensors"), quantize.out() + quantize.err());
        java.util.Set<String> modules = new java.util.TreeSet<>();
        try (dev.moeport.format.Checkpoint c = dev.moeport.format.Checkpoints.open(out)) {
            c.tensors().keySet().stream().filter(n -> n.endsWith(".weight_scale")).forEach(n -> modules.add(n.substring(0, n.length() - ".weight_scale".length())));
        }
        CliRun vllm = CliRun.of("check", out.toString(), "--engine", "vllm");
        assertEquals(1, vllm.code(), vllm.out());
        List<String> lines = vllm.out().lines().filter(l -> !l.startsWith(out + ": ")).toList();
        assertEquals(modules, new java.util.TreeSet<>(lines.stream().map(l -> l.substring(0, l.indexOf(": "))).toList()), vllm.out());
        assertEquals(modules.size(), lines.size(), vllm.out());
        assertTrue(lines.contains("model.layers.0.self_attn.q_proj: " + dev.moeport.check.PreflightCheck.FP8_LINEAR_WITHOUT_INPUT_SCALE), vllm.out());
        assertTrue(lines.contains("model.layers.1.mlp.experts.3.down_proj: " + dev.moeport.check.PreflightCheck.FP8_EXPERT_WITHOUT_INPUT_SCALE), vllm.out());
        assertEquals(0, CliRun.of("check", out.toString(), "--engine", "trtllm").code());

        Path calibrated = dev.moeport.testing.TestCheckpoints.withInputAmax(HF, tmp.resolve("hf-calibrated"), 4.0f);
        Path q = CliRun.succeeding("quantize", "--format", "fp8", "--in", calibrated.toString(), "--out", tmp.resolve("fp8-calibrated").toString());
        CliRun r = CliRun.of("check", q.toString(), "--engine", "vllm");
        assertEquals(0, r.code(), r.out());
    }

    /**
     * fp8_pb's weight_scale is stored as Model Optimizer's export writes it, {@code [ceil(out/128), 1, ceil(in/128), 1]}
     * (QuantizeCommandTest.assertBlockGrid), the shape vLLM's ModelOptFp8PbWoLinearMethod.create_weights allocates; a
     * checkpoint of moeport's earlier {@code [ceil(out/128), ceil(in/128)]} still reads to the same weights, but vLLM's
     * BasevLLMParameter._assert_and_load (model_executor/parameter.py) refuses it: a problem for vLLM only.
     */
    @Test
    void fp8PbScalesHaveModelOptimizersShapeAndTheOldOneIsAProblemForVllm() throws Exception {
        Path q = CliRun.succeeding("quantize", "--format", "fp8_pb", "--in", HF.toString(), "--out", tmp.resolve("fp8_pb").toString());
        Path old = tmp.resolve("fp8_pb-2d");
        List<String> scales = new java.util.ArrayList<>();
        try (dev.moeport.format.Checkpoint c = dev.moeport.format.Checkpoints.open(q)) {
            List<dev.moeport.testing.TestCheckpoints.Entry> entries = new java.util.ArrayList<>();
            for (var e : c.tensors().entrySet()) {
                dev.moeport.tensor.Tensor t = e.getValue();
                if (e.getKey().endsWith(".weight_scale")) {
                    dev.moeport.tensor.Shape w = c.tensor(e.getKey().replace(".weight_scale", ".weight")).shape();
                    long rows = (w.dim(0) + 127) / 128;
                    long cols = (w.dim(1) + 127) / 128;
                    assertEquals(dev.moeport.tensor.Shape.of(rows, 1, cols, 1), t.shape(), e.getKey());
                    entries.add(new dev.moeport.testing.TestCheckpoints.Entry(e.getKey(), dev.moeport.tensor.Shape.of(rows, cols), List.of(t)));
                    scales.add(e.getKey());
                } else {
                    entries.add(dev.moeport.testing.TestCheckpoints.Entry.of(e.getKey(), t));
                }
            }
            dev.moeport.testing.TestCheckpoints.write(old, entries, 1L << 30);
        }
        for (String file : List.of("config.json", "hf_quant_config.json")) {
            Files.copy(q.resolve(file), old.resolve(file));
        }
        CliRun vllm = CliRun.of("check", old.toString(), "--engine", "vllm");
        assertEquals(1, vllm.code(), vllm.out());
        List<String> lines = vllm.out().lines().filter(l -> !l.startsWith(old + ": ")).toList();
        assertEquals(new java.util.TreeSet<>(scales), new java.util.TreeSet<>(lines.stream().map(l -> l.substring(0, l.indexOf(": "))).toList()), vllm.out());
        assertTrue(lines.stream().allMatch(l -> l.contains("FP8_PB_WO loader allocates")), vllm.out());
        assertEquals(0, CliRun.of("check", old.toString(), "--engine", "trtllm").code());
        Path decoded = CliRun.succeeding("dequantize", "--in", q.toString(), "--out", tmp.resolve("dq").toString());
        Path decodedOld = CliRun.succeeding("dequantize", "--in", old.toString(), "--out", tmp.resolve("dq-2d").toString());
        dev.moeport.testing.TestCheckpoints.assertSameTensors(decoded, decodedOld);
    }

    /** Every architecture fixture with a transformers-written HF folder. */
    static Stream<String> hfFixtures() throws Exception {
        try (Stream<Path> dirs = Files.list(Shared.root().resolve("fixtures"))) {
            return dirs.filter(d -> Files.isDirectory(d.resolve("hf"))).map(d -> d.getFileName().toString()).sorted().toList().stream();
        }
    }

    @ParameterizedTest(name = "{0}")
    @MethodSource("hfFixtures")
    void everyArchitecturesOutputPasses(String arch) {
        Path hf = Shared.fixture(arch).resolve("hf");
        for (String format : List.of("fp8", "nvfp4", "mxfp4")) {
            // CliRun.succeeding checks it. Architectures without a table too (llama4, qwen3_5_moe, qwen3_next): q/k/v share one scale by name.
            CliRun.succeeding("quantize", "--format", format, "--in", hf.toString(), "--out", tmp.resolve(arch + "-" + format).toString());
        }
    }

    @Test
    void transformersFlavorAndTheBf16InputPass() {
        Path q = CliRun.succeeding("quantize", "--format", "fp8_pb", "--flavor", "transformers", "--in", HF.toString(), "--out", tmp.resolve("t").toString());
        assertEquals(0, CliRun.of("check", q.toString()).code());
        assertEquals(0, CliRun.of("check", HF.toString()).code());
    }

    @Test
    void zeroAndNanScalesFail() throws Exception {
        Path q = nvfp4();
        overwrite(q, EXPERT + "up_proj.weight_scale_2", 0f);
        overwrite(q, EXPERT + "down_proj.weight_scale_2", Float.NaN);
        CliRun r = CliRun.of("check", q.toString());
        assertEquals(1, r.code(), r.out());
        assertTrue(r.out().contains(EXPERT + "up_proj.weight_scale_2: 1 of 1 scale value(s) are zero"), r.out());
        assertTrue(r.out().contains(EXPERT + "down_proj.weight_scale_2: 1 of 1 scale value(s) are NaN or infinite"), r.out());
    }

    @Test
    void gateAndUpGlobalScalesThatDifferFail() throws Exception {
        Path q = nvfp4();
        overwrite(q, EXPERT + "up_proj.weight_scale_2", 1234.5f);
        CliRun r = CliRun.of("check", "--json", q.toString());
        assertEquals(1, r.code(), r.out());
        JsonNode problems = new ObjectMapper().readTree(r.out()).get("problems");
        assertEquals(1, problems.size(), r.out());
        assertEquals(EXPERT + "up_proj.weight_scale_2", problems.get(0).get("tensor").asText());
        assertTrue(problems.get(0).get("problem").asText().contains("gate_proj/up_proj"), r.out());
    }

    @Test
    void anExpertMissingAScaleItsSiblingsHaveFails() throws Exception {
        Path q = nvfp4();
        // Renamed in the header (same length), so the expert's weight_scale_2 is gone.
        renameInHeader(q, EXPERT + "up_proj.weight_scale_2", EXPERT + "up_proj.weight_scalX_2");
        CliRun r = CliRun.of("check", q.toString());
        assertEquals(1, r.code(), r.out());
        assertTrue(r.out().contains(EXPERT + "up_proj.weight_scale_2: is missing"), r.out());
    }

    @Test
    void excludeModulesNamingAQuantizedModuleAndMissingConfigKeysFail() throws Exception {
        Path q = nvfp4();
        Path file = q.resolve("hf_quant_config.json");
        ObjectNode root = (ObjectNode) new ObjectMapper().readTree(file.toFile());
        ObjectNode quant = (ObjectNode) root.get("quantization");
        quant.withArray("exclude_modules").add("model.layers.1.mlp.experts.*");
        quant.remove("group_size");
        Files.writeString(file, root.toString());
        CliRun r = CliRun.of("check", q.toString());
        assertEquals(1, r.code(), r.out());
        assertTrue(r.out().contains(EXPERT + "up_proj: is quantized, but the exclusion list names it ('model.layers.1.mlp.experts.*')"), r.out());
        assertTrue(r.out().contains("hf_quant_config.json: quantization config has no 'group_size'"), r.out());
    }

    private Path nvfp4() {
        return CliRun.succeeding("quantize", "--format", "nvfp4", "--in", HF.toString(), "--out", tmp.resolve("nvfp4").toString());
    }

    /** The shard of {@code q} whose header names {@code tensor}. */
    @Test
    void compressedTensorsGlobalScalesAreCheckedToo() throws Exception {
        Path q = CliRun.succeeding("quantize", "--format", "nvfp4", "--flavor", "compressed-tensors", "--in", HF.toString(),
                "--out", tmp.resolve("ct").toString());
        assertEquals(0, CliRun.of("check", q.toString()).code());
        overwrite(q, EXPERT + "up_proj.weight_global_scale", 0f);
        CliRun r = CliRun.of("check", q.toString());
        assertEquals(1, r.code(), r.out());
        assertTrue(r.out().contains(EXPERT + "up_proj.weight_global_scale: "), r.out());
    }

    /**
     * Scales of the wrong dtype or shape for their format, edited in the header by hand: an NVFP4 block scale typed U8
     * (E8M0's byte, not E4M3), and compressed-tensors' FP8 channel scales turned from the column {@code [out, 1]} its
     * lifecycle/initialize.py (lines 205-209) gives them to a row {@code [1, out]}.
     */
    @Test
    void scalesOfTheWrongDtypeOrShapeFail() throws Exception {
        Path q = nvfp4();
        editHeader(q, EXPERT + "up_proj.weight_scale", "\"F8_E4M3\"", "\"U8\"");
        CliRun r = CliRun.of("check", q.toString());
        assertEquals(1, r.code(), r.out());
        assertTrue(r.out().contains(EXPERT + "up_proj.weight_scale: is U8, but nvfp4 scales are F8_E4M3"), r.out());
        Path pc = CliRun.succeeding("quantize", "--format", "fp8_pc", "--flavor", "compressed-tensors", "--in", HF.toString(),
                "--out", tmp.resolve("pc").toString());
        String scale = EXPERT + "down_proj.weight_scale";
        JsonNode entry = new ObjectMapper().readTree(header(shardOf(pc, scale))).get(scale);
        long out = entry.get("shape").get(0).asLong();
        assertEquals(1, entry.get("shape").get(1).asLong());
        editHeader(pc, scale, "[" + out + ",1]", "[1," + out + "]");
        r = CliRun.of("check", pc.toString());
        assertEquals(1, r.code(), r.out());
        assertTrue(r.out().contains(scale + ": has shape [1, " + out + "], but fp8_pc of weight "), r.out());
    }

    /** Replaces {@code from} by {@code to} (padded with spaces to its length) in {@code tensor}'s entry of the safetensors header. */
    private static void editHeader(Path q, String tensor, String from, String to) throws Exception {
        Path shard = shardOf(q, tensor);
        String header = header(shard);
        int entry = header.indexOf("\"" + tensor + "\":");
        int at = header.indexOf(from, entry);
        assertTrue(entry >= 0 && at > entry && to.length() <= from.length(), header);
        String edited = header.substring(0, at) + to + " ".repeat(from.length() - to.length()) + header.substring(at + from.length());
        try (RandomAccessFile f = new RandomAccessFile(shard.toFile(), "rw")) {
            f.seek(8);
            f.write(edited.getBytes(StandardCharsets.UTF_8));
        }
    }

    private static Path shardOf(Path q, String tensor) throws Exception {
        try (Stream<Path> files = Files.list(q)) {
            for (Path f : files.filter(p -> p.toString().endsWith(".safetensors")).toList()) {
                if (header(f).contains("\"" + tensor + "\"")) {
                    return f;
                }
            }
        }
        throw new AssertionError("no shard holds " + tensor);
    }

    private static String header(Path shard) throws Exception {
        try (RandomAccessFile f = new RandomAccessFile(shard.toFile(), "r")) {
            byte[] len = new byte[8];
            f.readFully(len);
            byte[] h = new byte[(int) ByteBuffer.wrap(len).order(ByteOrder.LITTLE_ENDIAN).getLong()];
            f.readFully(h);
            return new String(h, StandardCharsets.UTF_8);
        }
    }

    /** Writes one f32 value over a scalar F32 tensor, at the offset the safetensors header gives. */
    private static void overwrite(Path q, String tensor, float value) throws Exception {
        Path shard = shardOf(q, tensor);
        String header = header(shard);
        JsonNode entry = new ObjectMapper().readTree(header).get(tensor);
        assertEquals("F32", entry.get("dtype").asText());
        long offset = 8 + header.getBytes(StandardCharsets.UTF_8).length + entry.get("data_offsets").get(0).asLong();
        try (RandomAccessFile f = new RandomAccessFile(shard.toFile(), "rw")) {
            f.seek(offset);
            f.write(ByteBuffer.allocate(4).order(ByteOrder.LITTLE_ENDIAN).putFloat(value).array());
        }
    }

    private static void renameInHeader(Path q, String from, String to) throws Exception {
        assertEquals(from.length(), to.length());
        Path shard = shardOf(q, from);
        String header = header(shard);
        byte[] renamed = header.replace("\"" + from + "\"", "\"" + to + "\"").getBytes(StandardCharsets.UTF_8);
        try (RandomAccessFile f = new RandomAccessFile(shard.toFile(), "rw")) {
            f.seek(8);
            f.write(renamed);
        }
        Path index = q.resolve("model.safetensors.index.json");
        if (Files.exists(index)) {
            Files.writeString(index, Files.readString(index).replace("\"" + from + "\"", "\"" + to + "\""));
        }
    }
}
