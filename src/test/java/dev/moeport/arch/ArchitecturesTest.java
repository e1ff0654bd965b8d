package dev.moeport.arch;

import static dev.moeport.testing.TestCheckpoints.assertSameTensors;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.moeport.cli.CliRun;
import dev.moeport.format.Checkpoint;
import dev.moeport.format.Checkpoints;
import dev.moeport.tensor.DType;
import dev.moeport.tensor.FloatFormats;
import dev.moeport.tensor.Shape;
import dev.moeport.tensor.Tensor;
import dev.moeport.testing.Shared;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;
import org.junit.jupiter.params.provider.ValueSource;

/** The four architectures of ARCHITECTURES.md on their transformers-written fixtures. */
class ArchitecturesTest {
    @TempDir
    Path tmp;

    private static Path hf(String arch) {
        return Shared.fixture(arch).resolve("hf");
    }

    @ParameterizedTest
    @ValueSource(strings = {"qwen3_moe", "mixtral", "deepseek_v3", "gpt_oss", "olmoe", "minimax_m2", "glm4_moe", "ernie4_5_moe", "nemotron_h_latent",
            "qwen3_next", "qwen3_5_moe", "llama4"})
    void importThenExportReproducesTheHfFolderBitForBit(String arch) {
        for (String layout : List.of("te", "sequential", "stacked")) {
            Path mcore = CliRun.succeeding("import", "--ckpt-format", "safetensors", "--in", hf(arch).toString(), "--out", tmp.resolve(arch + "-" + layout).toString(), "--experts", layout);
            Path back = CliRun.succeeding("export", "--in", mcore.toString(), "--hf-config", hf(arch).toString(), "--out", tmp.resolve(arch + "-hf-" + layout).toString());
            assertSameTensors(hf(arch), back);
            // verify maps the MCore side to HF names and reads both in step, however each stores its experts.
            for (List<String> sides : List.of(List.of(mcore.toString(), hf(arch).toString()), List.of(hf(arch).toString(), mcore.toString()))) {
                CliRun r = CliRun.of("verify", sides.get(0), sides.get(1), "--hf-config", hf(arch).toString());
                assertEquals(0, r.code(), arch + " " + layout + ": " + r.out() + r.err());
            }
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"qwen3_moe", "mixtral", "deepseek_v3", "nemotron_h_tiny", "olmoe", "minimax_m2", "glm4_moe", "ernie4_5_moe", "nemotron_h_latent",
            "qwen3_next", "qwen3_5_moe"})
    void convertToFusedAndBackReproducesTheHfFolder(String arch) {
        Path fused = CliRun.succeeding("convert", "--in", hf(arch).toString(), "--out", tmp.resolve("fused").toString(), "--experts", "fused");
        Path back = CliRun.succeeding("convert", "--in", fused.toString(), "--out", tmp.resolve("back").toString(), "--experts", "per-expert");
        assertSameTensors(hf(arch), back);
        // The fused folder also reads as the per-expert one everywhere else.
        assertEquals(0, CliRun.of("verify", hf(arch).toString(), fused.toString()).code());
    }

    @Test
    void fusedNamesAreTransformersInMemoryNames() {
        // Names and shapes as transformers 5 writes them with save_pretrained(save_original_format=False).
        Map<String, Map<String, Shape>> expected = Map.of(
                "qwen3_moe", Map.of("model.layers.1.mlp.experts.gate_up_proj", Shape.of(8, 256, 256),
                        "model.layers.1.mlp.experts.down_proj", Shape.of(8, 256, 128), "model.layers.0.mlp.gate_proj.weight", Shape.of(512, 256)),
                "mixtral", Map.of("model.layers.0.mlp.experts.gate_up_proj", Shape.of(8, 256, 256), "model.layers.1.mlp.gate.weight", Shape.of(8, 256)),
                "nemotron_h_tiny", Map.of("model.embeddings.weight", Shape.of(1024, 256), "model.layers.2.mixer.experts.up_proj", Shape.of(8, 128, 256),
                        "model.layers.5.mixer.experts.down_proj", Shape.of(8, 256, 128), "model.norm_f.weight", Shape.of(256), "lm_head.weight", Shape.of(1024, 256)),
                "olmoe", Map.of("model.layers.0.mlp.experts.gate_up_proj", Shape.of(8, 128, 128), "model.layers.1.mlp.experts.down_proj", Shape.of(8, 128, 64)),
                // transformers' minimax_m2 pattern: mixtral's, plus block_sparse_moe.e_score_correction_bias -> mlp.e_score_correction_bias.
                "minimax_m2", Map.of("model.layers.0.mlp.experts.gate_up_proj", Shape.of(8, 128, 128), "model.layers.0.mlp.e_score_correction_bias", Shape.of(8)),
                // transformers' ernie4_5_moe pattern: qwen2_moe's, plus mlp.moe_statics -> mlp.gate.moe_statics.
                "ernie4_5_moe", Map.of("model.layers.1.mlp.experts.gate_up_proj", Shape.of(8, 128, 128),
                        "model.layers.1.mlp.gate.moe_statics.e_score_correction_bias", Shape.of(1, 8)),
                // Qwen3.5's published checkpoints store their experts so.
                "qwen3_5_moe", Map.of("model.layers.0.mlp.experts.gate_up_proj", Shape.of(8, 128, 128), "model.layers.3.mlp.experts.down_proj", Shape.of(8, 128, 64)));
        expected.forEach((arch, shapes) -> {
            Path fused = CliRun.succeeding("convert", "--in", hf(arch).toString(), "--out", tmp.resolve("f-" + arch).toString(), "--experts", "fused");
            try (Checkpoint c = Checkpoints.open(fused)) {
                shapes.forEach((name, shape) -> assertEquals(shape, c.tensor(name).shape(), arch + " " + name));
                assertFalse(c.tensors().keySet().stream().anyMatch(n -> n.matches(".*experts\\.\\d+\\..*")), arch + ": no per-expert names left");
            }
        });
        for (String arch : List.of("gpt_oss", "llama4")) {
            CliRun oneLayout = CliRun.of("convert", "--in", hf(arch).toString(), "--out", tmp.resolve("g-" + arch).toString(), "--experts", "fused");
            assertEquals(1, oneLayout.code());
            assertTrue(oneLayout.err().contains(arch + " checkpoints have one expert layout only"), oneLayout.err());
        }
    }

    private static float bf16(MemorySegment s, long i) {
        return Float.intBitsToFloat(s.getAtIndex(FloatFormats.SHORT_LE, i) << 16);
    }

    @Test
    void qwenAttentionIsGqaInterleavedAndExpertsAreGateThenUp() {
        Path mcore = CliRun.succeeding("import", "--ckpt-format", "safetensors", "--in", hf("qwen3_moe").toString(), "--out", tmp.resolve("m").toString());
        try (Checkpoint h = Checkpoints.open(hf("qwen3_moe")); Checkpoint m = Checkpoints.open(mcore); Arena arena = Arena.ofConfined()) {
            // 4 query heads, 2 KV groups, head_dim 64.
            assertGqaInterleaved(h, m, 1, 2, 2, 64, arena);
            assertGateThenUp(m.tensor("decoder.layers.2.mlp.experts.linear_fc1.weight7"), h.tensor("model.layers.2.mlp.experts.7.gate_proj.weight"),
                    h.tensor("model.layers.2.mlp.experts.7.up_proj.weight"), arena);
            assertTrue(m.contains("decoder.layers.0.mlp.linear_fc1.layer_norm_weight"), "mlp_only_layers [0] is dense");
            assertTrue(m.contains("decoder.layers.1.pre_mlp_layernorm.weight"));
        }
    }

    /** ARCHITECTURES.md, Mixtral: experts {@code w1} (gate), {@code w3} (up), {@code w2} (down); MCore fc1 = [w1 ; w3]. */
    @Test
    void mixtralExpertsAreW1ThenW3AndAttentionIsGqaInterleaved() {
        Path mcore = CliRun.succeeding("import", "--ckpt-format", "safetensors", "--in", hf("mixtral").toString(), "--out", tmp.resolve("m").toString());
        try (Checkpoint h = Checkpoints.open(hf("mixtral")); Checkpoint m = Checkpoints.open(mcore); Arena arena = Arena.ofConfined()) {
            // 4 query heads, 2 KV groups, head_dim = hidden 256 / 4 heads.
            for (int layer = 0; layer < 2; layer++) {
                assertGqaInterleaved(h, m, layer, 2, 2, 64, arena);
                String experts = "model.layers." + layer + ".block_sparse_moe.experts.";
                for (int e = 0; e < 8; e++) {
                    String fc = "decoder.layers." + layer + ".mlp.experts.linear_fc";
                    assertGateThenUp(m.tensor(fc + "1.weight" + e), h.tensor(experts + e + ".w1.weight"), h.tensor(experts + e + ".w3.weight"), arena);
                    assertSameBytes(h.tensor(experts + e + ".w2.weight"), m.tensor(fc + "2.weight" + e), arena);
                }
                assertSameBytes(h.tensor("model.layers." + layer + ".block_sparse_moe.gate.weight"),
                        m.tensor("decoder.layers." + layer + ".mlp.router.weight"), arena);
            }
        }
    }

    /** ARCHITECTURES.md, DeepSeek-V3: every MLA tensor is one tensor on both sides, rows unchanged. */
    @Test
    void deepSeekMlaTensorsAreCopiedRowForRow() {
        Path mcore = CliRun.succeeding("import", "--ckpt-format", "safetensors", "--in", hf("deepseek_v3").toString(), "--out", tmp.resolve("m").toString());
        Map<String, String> mla = Map.of(
                "linear_q_down_proj.weight", "q_a_proj.weight",
                "linear_q_up_proj.layer_norm_weight", "q_a_layernorm.weight",
                "linear_q_up_proj.weight", "q_b_proj.weight",
                "linear_kv_down_proj.weight", "kv_a_proj_with_mqa.weight",
                "linear_kv_up_proj.layer_norm_weight", "kv_a_layernorm.weight",
                "linear_kv_up_proj.weight", "kv_b_proj.weight",
                "linear_proj.weight", "o_proj.weight");
        try (Checkpoint h = Checkpoints.open(hf("deepseek_v3")); Checkpoint m = Checkpoints.open(mcore); Arena arena = Arena.ofConfined()) {
            for (int layer = 0; layer < 3; layer++) {
                int l = layer;
                mla.forEach((mcoreName, hfName) -> assertSameBytes(h.tensor("model.layers." + l + ".self_attn." + hfName),
                        m.tensor("decoder.layers." + l + ".self_attention." + mcoreName), arena));
                assertSameBytes(h.tensor("model.layers." + l + ".input_layernorm.weight"), m.tensor("decoder.layers." + l + ".input_layernorm.weight"), arena);
            }
            // The shapes the config gives: q_b [heads * (nope 32 + rope 16), q_lora 96]; kv_a [kv_lora 64 + rope 16, H];
            // kv_b [heads * (nope 32 + v 32), kv_lora 64]; o [heads * v 32, H]^T.
            assertEquals(Shape.of(4 * 48, 96), m.tensor("decoder.layers.1.self_attention.linear_q_up_proj.weight").shape());
            assertEquals(Shape.of(64 + 16, 256), m.tensor("decoder.layers.1.self_attention.linear_kv_down_proj.weight").shape());
            assertEquals(Shape.of(4 * 64, 64), m.tensor("decoder.layers.1.self_attention.linear_kv_up_proj.weight").shape());
            assertEquals(Shape.of(256, 4 * 32), m.tensor("decoder.layers.1.self_attention.linear_proj.weight").shape());
            // Dense layer 0 and the shared expert: gated [gate ; up].
            assertGateThenUp(m.tensor("decoder.layers.0.mlp.linear_fc1.weight"), h.tensor("model.layers.0.mlp.gate_proj.weight"),
                    h.tensor("model.layers.0.mlp.up_proj.weight"), arena);
            assertGateThenUp(m.tensor("decoder.layers.1.mlp.shared_experts.linear_fc1.weight"), h.tensor("model.layers.1.mlp.shared_experts.gate_proj.weight"),
                    h.tensor("model.layers.1.mlp.shared_experts.up_proj.weight"), arena);
        }
    }

    /**
     * ARCHITECTURES.md's GQA-merge, computed here from the HF q/k/v: MCore {@code linear_qkv} rows are, per KV
     * group g, [q heads g*r .. g*r+r-1 ; k_g ; v_g], {@code headDim} rows each.
     */
    private static void assertGqaInterleaved(Checkpoint h, Checkpoint m, int layer, int groups, int r, int headDim, Arena arena) {
        Tensor qkvTensor = m.tensor("decoder.layers." + layer + ".self_attention.linear_qkv.weight");
        MemorySegment qkv = qkvTensor.bytes(arena);
        MemorySegment q = h.tensor("model.layers." + layer + ".self_attn.q_proj.weight").bytes(arena);
        MemorySegment k = h.tensor("model.layers." + layer + ".self_attn.k_proj.weight").bytes(arena);
        MemorySegment v = h.tensor("model.layers." + layer + ".self_attn.v_proj.weight").bytes(arena);
        long row = qkvTensor.shape().dim(1) * 2;
        long qRows = (long) r * headDim;
        for (int g = 0; g < groups; g++) {
            long base = g * (qRows + 2L * headDim);
            String what = "layer " + layer + " group " + g;
            assertEquals(-1, qkv.asSlice(base * row, qRows * row).mismatch(q.asSlice(g * qRows * row, qRows * row)), "q of " + what);
            assertEquals(-1, qkv.asSlice((base + qRows) * row, headDim * row).mismatch(k.asSlice((long) g * headDim * row, headDim * row)), "k of " + what);
            assertEquals(-1, qkv.asSlice((base + qRows + headDim) * row, headDim * row).mismatch(v.asSlice((long) g * headDim * row, headDim * row)),
                    "v of " + what);
        }
        assertEquals(groups * (qRows + 2L * headDim) * row, qkv.byteSize(), "layer " + layer + " qkv size");
    }

    /** "gated": MCore fc1 = [gate ; up] along rows. */
    private static void assertGateThenUp(Tensor fc1, Tensor gate, Tensor up, Arena arena) {
        MemorySegment f = fc1.bytes(arena);
        MemorySegment g = gate.bytes(arena);
        MemorySegment u = up.bytes(arena);
        assertEquals(g.byteSize() + u.byteSize(), f.byteSize(), fc1.name());
        assertEquals(-1, f.asSlice(0, g.byteSize()).mismatch(g), fc1.name() + ": gate first");
        assertEquals(-1, f.asSlice(g.byteSize(), u.byteSize()).mismatch(u), fc1.name() + ": then up");
    }

    private static void assertSameBytes(Tensor expected, Tensor actual, Arena arena) {
        assertEquals(expected.shape(), actual.shape(), actual.name());
        assertEquals(-1, expected.bytes(arena).mismatch(actual.bytes(arena)), actual.name() + " differs from " + expected.name());
    }

    @Test
    void gptOssExpertsAreTransposedAndDeinterleaved() {
        Path mcore = CliRun.succeeding("import", "--ckpt-format", "safetensors", "--in", hf("gpt_oss").toString(), "--out", tmp.resolve("m").toString());
        try (Checkpoint h = Checkpoints.open(hf("gpt_oss")); Checkpoint m = Checkpoints.open(mcore); Arena arena = Arena.ofConfined()) {
            long hidden = 256;
            long inter = 128;
            for (int e : new int[] {0, 5}) {
                MemorySegment gateUp = h.tensor("model.layers.1.mlp.experts.gate_up_proj").select(e, "x").bytes(arena); // [H, 2I]
                MemorySegment fc1 = m.tensor("decoder.layers.1.mlp.experts.linear_fc1.weight" + e).bytes(arena); // [2I, H]
                for (long j = 0; j < inter; j++) {
                    for (long c = 0; c < hidden; c += 37) {
                        assertEquals(bf16(gateUp, c * 2 * inter + 2 * j), bf16(fc1, j * hidden + c), "gate " + j + "," + c);
                        assertEquals(bf16(gateUp, c * 2 * inter + 2 * j + 1), bf16(fc1, (inter + j) * hidden + c), "up " + j + "," + c);
                    }
                }
                MemorySegment down = h.tensor("model.layers.1.mlp.experts.down_proj").select(e, "x").bytes(arena); // [I, H]
                MemorySegment fc2 = m.tensor("decoder.layers.1.mlp.experts.linear_fc2.weight" + e).bytes(arena); // [H, I]
                for (long i = 0; i < inter; i += 7) {
                    for (long c = 0; c < hidden; c++) {
                        assertEquals(bf16(down, i * hidden + c), bf16(fc2, c * inter + i));
                    }
                }
                MemorySegment bias = h.tensor("model.layers.1.mlp.experts.gate_up_proj_bias").select(e, "b").bytes(arena);
                MemorySegment fc1Bias = m.tensor("decoder.layers.1.mlp.experts.linear_fc1.bias" + e).bytes(arena);
                for (long j = 0; j < inter; j++) {
                    assertEquals(bf16(bias, 2 * j), bf16(fc1Bias, j));
                    assertEquals(bf16(bias, 2 * j + 1), bf16(fc1Bias, inter + j));
                }
            }
            assertEquals(Shape.of(4), m.tensor("decoder.layers.0.self_attention.core_attention.softmax_offset").shape());
            assertEquals(Shape.of(512), m.tensor("decoder.layers.0.self_attention.linear_qkv.bias").shape());
        }
    }

    @Test
    void gptOssFusedExpertsStayUnquantizedAndAreListedSo() throws Exception {
        Path mcore = CliRun.succeeding("import", "--ckpt-format", "safetensors", "--in", hf("gpt_oss").toString(), "--out", tmp.resolve("m").toString());
        Path out = CliRun.succeeding("export", "--in", mcore.toString(), "--hf-config", hf("gpt_oss").toString(), "--out",
                tmp.resolve("q").toString(), "--format", "nvfp4");
        try (Checkpoint q = Checkpoints.open(out)) {
            assertEquals(DType.BF16, q.tensor("model.layers.0.mlp.experts.gate_up_proj").dtype());
            assertEquals(DType.U8, q.tensor("model.layers.0.self_attn.q_proj.weight").dtype());
        }
        var excluded = new ObjectMapper().readTree(out.resolve("hf_quant_config.json").toFile()).at("/quantization/exclude_modules");
        List<String> names = new java.util.ArrayList<>();
        excluded.forEach(n -> names.add(n.asText()));
        // In Model Optimizer's wildcard forms (quant_utils.py, _prefix_wildcard_summarize_exclude_modules), matched as fnmatch does.
        List<dev.moeport.util.Glob> globs = names.stream().map(dev.moeport.util.Glob::of).toList();
        for (String module : List.of("model.layers.0.mlp.experts", "model.layers.1.mlp.experts", "model.layers.0.mlp.router")) {
            assertTrue(dev.moeport.util.Glob.anyMatches(globs, module), module + " not in " + names);
        }
        assertFalse(dev.moeport.util.Glob.anyMatches(globs, "model.layers.0.self_attn.q_proj"), names.toString());
    }

    @Test
    void aSquareDownProjIsTransposedByFormatNotByShape() {
        // A square [E, n, n] expert stack: only the format says which way it goes.
        int n = 4;
        byte[] bytes = new byte[2 * n * n * 2];
        MemorySegment s = MemorySegment.ofArray(bytes);
        for (int i = 0; i < 2 * n * n; i++) {
            s.setAtIndex(FloatFormats.SHORT_LE, i, FloatFormats.floatToBf16(i));
        }
        Tensor downProj = dev.moeport.testing.TestCheckpoints.bytes("down_proj", DType.BF16, Shape.of(2, n, n), bytes);
        var parts = new Transform.InterleavedExperts(1).toMcore(List.of(downProj), List.of("fc2.weight0", "fc2.weight1"), null, null);
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment fc2 = ((dev.moeport.plan.Piece.Source) parts.get(1).pieces().getFirst()).tensor().bytes(arena);
            for (int r = 0; r < n; r++) {
                for (int c = 0; c < n; c++) {
                    assertEquals(16 + c * n + r, bf16(fc2, r * n + c), "fc2[1] = down_proj[1]^T at " + r + "," + c);
                }
            }
        }
    }

    @Test
    void deepSeekDenseAndMoeLayersPlaceTheirNormsApart() {
        Path mcore = CliRun.succeeding("import", "--ckpt-format", "safetensors", "--in", hf("deepseek_v3").toString(), "--out", tmp.resolve("m").toString());
        try (Checkpoint h = Checkpoints.open(hf("deepseek_v3")); Checkpoint m = Checkpoints.open(mcore)) {
            assertTrue(m.contains("decoder.layers.0.mlp.linear_fc1.layer_norm_weight"), "first_k_dense_replace = 1: layer 0 is dense");
            assertFalse(m.contains("decoder.layers.0.pre_mlp_layernorm.weight"));
            assertTrue(m.contains("decoder.layers.1.pre_mlp_layernorm.weight"));
            assertFalse(m.contains("decoder.layers.1.mlp.linear_fc1.layer_norm_weight"));
            assertTrue(m.contains("decoder.layers.0.input_layernorm.weight"), "MLA keeps its input norm apart");
            assertEquals(DType.BF16, h.tensor("model.layers.1.mlp.gate.e_score_correction_bias").dtype());
            assertEquals(DType.F32, m.tensor("decoder.layers.1.mlp.router.expert_bias").dtype(), "Megatron keeps the expert bias in f32");
            assertFalse(m.contains("decoder.layers.1.mlp.router.bias"));
        }
        Path f32 = CliRun.succeeding("export", "--in", mcore.toString(), "--hf-config", hf("deepseek_v3").toString(), "--out", tmp.resolve("f32").toString(),
                "--dtype", "f32");
        try (Checkpoint c = Checkpoints.open(f32)) {
            assertEquals(DType.F32, c.tensor("model.layers.1.mlp.experts.0.up_proj.weight").dtype());
            assertEquals(DType.F32, c.tensor("model.layers.1.mlp.gate.e_score_correction_bias").dtype(), "the expert bias keeps its dtype");
        }
    }

    @Test
    void everyRowDeclaresTheShapeOfItsTensorsAndTheFixturesConfigsGiveEveryDimension() {
        Map<String, List<String>> fixtures = Map.of("nemotron_h", List.of("nemotron_h_tiny", "nemotron_h_latent"));
        for (Architecture arch : Architectures.all()) {
            for (Rule rule : arch.rules()) {
                assertFalse(rule.shapes().isEmpty(), arch.name() + ": " + rule.describe() + " declares no shape");
            }
            for (String fixture : fixtures.getOrDefault(arch.name(), List.of(arch.name()))) {
                ModelConfig config = ModelConfig.load(hf(fixture));
                for (Rule rule : arch.rules()) {
                    for (int i = 0; i < rule.hf().size(); i++) {
                        // An optional row may name sizes only the models that have it configure (NemotronH's latent size).
                        assertTrue(rule.isOptional() || rule.shapeOf(i).resolves(config), fixture + ": " + rule.describe() + " leaves a dimension open");
                    }
                }
            }
        }
    }

    /** {@code arch}'s fixture folder with {@code key} of its config set to {@code value}: the tensors copied (a few MB). */
    private Path withConfigValue(String arch, String key, int value) throws Exception {
        Path dir = Files.createDirectories(tmp.resolve(arch + "-" + key));
        try (var files = Files.list(hf(arch))) {
            for (Path f : files.toList()) {
                if (!f.getFileName().toString().equals("config.json")) {
                    Files.copy(f, dir.resolve(f.getFileName()));
                }
            }
        }
        ObjectMapper json = new ObjectMapper();
        ObjectNode config = (ObjectNode) json.readTree(hf(arch).resolve("config.json").toFile());
        config.put(key, value);
        json.writeValue(dir.resolve("config.json").toFile(), config);
        return dir;
    }

    /**
     * Issue 11: a config that contradicts the tensors is one line naming tensor, both shapes and the config values, and nothing is
     * written. Expected shapes are the fixtures' (transformers-written) with the changed key worked in by hand.
     */
    @ParameterizedTest
    @CsvSource(delimiter = ';', value = {
            "qwen3_moe; moe_intermediate_size; 256; model.layers.1.mlp.experts.0.gate_proj.weight; [128, 256]; [256, 256] (moe_intermediate_size = 256)",
            "mixtral; intermediate_size; 256; model.layers.0.block_sparse_moe.experts.0.w1.weight; [128, 256]; [256, 256] (intermediate_size = 256)",
            "deepseek_v3; kv_lora_rank; 32; model.layers.0.self_attn.kv_a_proj_with_mqa.weight; [80, 256]; [48, 256] (kv_lora_rank = 32, qk_rope_head_dim = 16)",
            "gpt_oss; intermediate_size; 64; model.layers.0.mlp.experts.gate_up_proj; [8, 256, 256]; [8, 256, 128] (intermediate_size = 64)",
            "nemotron_h_latent; moe_latent_size; 32; backbone.layers.2.mixer.experts.0.up_proj.weight; [64, 64]; [64, 32] (moe_latent_size = 32)",
            "qwen3_next; linear_conv_kernel_dim; 3; model.layers.0.linear_attn.conv1d.weight; [256, 1, 4]; [256, 1, 3] (linear_conv_kernel_dim = 3)",
            "qwen3_5_moe; shared_expert_intermediate_size; 32; model.layers.0.mlp.shared_expert.gate_proj.weight; [64, 128]; [32, 128] (shared_expert_intermediate_size = 32)",
            "llama4; intermediate_size; 32; model.layers.0.feed_forward.experts.gate_up_proj; [8, 128, 128]; [8, 128, 64] (intermediate_size = 32)"})
    void aConfigThatContradictsATensorShapeIsRefusedBeforeWriting(String arch, String key, int value, String tensor, String actual,
                                                                  String expected) throws Exception {
        Path wrong = withConfigValue(arch, key, value);
        Path mcore = CliRun.succeeding("import", "--ckpt-format", "safetensors", "--in", hf(arch).toString(), "--out", tmp.resolve("m").toString());
        List<CliRun> runs = List.of(
                CliRun.of("export", "--in", mcore.toString(), "--hf-config", wrong.toString(), "--out", tmp.resolve("exported").toString()),
                CliRun.of("import", "--ckpt-format", "safetensors", "--in", wrong.toString(), "--out", tmp.resolve("imported").toString()));
        for (CliRun r : runs) {
            assertEquals(1, r.code(), r.out() + r.err());
            assertEquals(1, r.err().strip().lines().count(), r.err());
            assertTrue(r.err().contains("tensor '" + tensor + "'") && r.err().contains(" has shape " + actual + " but ")
                    && r.err().contains(" implies " + expected), r.err());
        }
        assertFalse(Files.exists(tmp.resolve("exported")) || Files.exists(tmp.resolve("imported")), "nothing written");
    }

    /** Quantized checkpoints of the newer architectures: quantize, import, dequantize, export quantized, verify. */
    @ParameterizedTest
    @ValueSource(strings = {"olmoe", "minimax_m2", "glm4_moe", "ernie4_5_moe", "qwen3_next", "qwen3_5_moe", "llama4"})
    void quantizedCheckpointsImportDequantizeAndExport(String arch) {
        Path quantized = CliRun.succeeding("quantize", "--format", "fp8", "--in", hf(arch).toString(), "--out", tmp.resolve("q").toString());
        // Kept calibration: re-quantizing decoded fp8 is not idempotent (Model Optimizer dequantizes in bf16, which can round
        // a block's maximum up, as qwen3_5_moe's layer 2 expert 7 does), so the per-tensor scales come back from the import.
        Path mcore = CliRun.succeeding("import", "--ckpt-format", "safetensors", "--keep-quantized", "--in", quantized.toString(), "--out",
                tmp.resolve("m").toString());
        Path dequantized = CliRun.succeeding("dequantize", "--in", quantized.toString(), "--out", tmp.resolve("dq").toString());
        CliRun same = CliRun.of("verify", dequantized.toString(), mcore.toString(), "--hf-config", hf(arch).toString());
        assertEquals(0, same.code(), same.out() + same.err());
        Path again = CliRun.succeeding("export", "--in", mcore.toString(), "--hf-config", hf(arch).toString(), "--out", tmp.resolve("again").toString(),
                "--format", "fp8");
        CliRun requantized = CliRun.of("verify", quantized.toString(), again.toString());
        assertEquals(0, requantized.code(), requantized.out() + requantized.err());
    }

    /** Row {@code row} of a 2-D tensor's bytes. */
    private static byte[] row(byte[] tensor, long rows, long row) {
        int width = (int) (tensor.length / rows);
        return java.util.Arrays.copyOfRange(tensor, (int) row * width, (int) (row + 1) * width);
    }

    private static byte[] bytes(Checkpoint c, String name) {
        try (Arena arena = Arena.ofConfined()) {
            return c.tensor(name).bytes(arena).toArray(java.lang.foreign.ValueLayout.JAVA_BYTE);
        }
    }

    /** {@code parts} put one after the other. */
    private static byte[] concat(byte[]... parts) {
        java.io.ByteArrayOutputStream out = new java.io.ByteArrayOutputStream();
        for (byte[] p : parts) {
            out.writeBytes(p);
        }
        return out.toByteArray();
    }

    /**
     * The expected Megatron-Core tensors built here from the HF ones, apart from the rule code. OLMoE: its q/k norms are
     * as wide as all heads (Megatron-Bridge olmoe_provider.py, OLMoESelfAttention, lines 120-134) and copied as they are;
     * with 4 KV heads of 32 rows, linear_qkv is [q_g ; k_g ; v_g] per head. MiniMax-M2: fc1 of expert e is [w1 ; w3]
     * (minimax_m2_bridge.py, GatedMLPMapping gate=w1 up=w3, lines 211-215), the router bias becomes expert_bias in f32.
     */
    @Test
    void newArchitecturesMcoreTensorsComputedIndependently() {
        Path olmoe = CliRun.succeeding("import", "--ckpt-format", "safetensors", "--in", hf("olmoe").toString(), "--out", tmp.resolve("o").toString());
        try (Checkpoint h = Checkpoints.open(hf("olmoe")); Checkpoint m = Checkpoints.open(olmoe)) {
            assertEquals(Shape.of(128), m.tensor("decoder.layers.1.self_attention.q_layernorm.weight").shape());
            assertArrayEquals(bytes(h, "model.layers.1.self_attn.k_norm.weight"), bytes(m, "decoder.layers.1.self_attention.k_layernorm.weight"));
            byte[] q = bytes(h, "model.layers.1.self_attn.q_proj.weight");
            byte[] k = bytes(h, "model.layers.1.self_attn.k_proj.weight");
            byte[] v = bytes(h, "model.layers.1.self_attn.v_proj.weight");
            java.io.ByteArrayOutputStream qkv = new java.io.ByteArrayOutputStream();
            for (int head = 0; head < 4; head++) {
                for (byte[] part : List.of(q, k, v)) {
                    for (int r = 0; r < 32; r++) {
                        qkv.writeBytes(row(part, 128, head * 32L + r));
                    }
                }
            }
            assertArrayEquals(qkv.toByteArray(), bytes(m, "decoder.layers.1.self_attention.linear_qkv.weight"));
            assertArrayEquals(concat(bytes(h, "model.layers.0.mlp.experts.3.gate_proj.weight"), bytes(h, "model.layers.0.mlp.experts.3.up_proj.weight")),
                    bytes(m, "decoder.layers.0.mlp.experts.linear_fc1.weight3"));
        }
        Path minimax = CliRun.succeeding("import", "--ckpt-format", "safetensors", "--in", hf("minimax_m2").toString(), "--out", tmp.resolve("mm").toString());
        try (Checkpoint h = Checkpoints.open(hf("minimax_m2")); Checkpoint m = Checkpoints.open(minimax); Arena arena = Arena.ofConfined()) {
            assertArrayEquals(concat(bytes(h, "model.layers.1.block_sparse_moe.experts.5.w1.weight"), bytes(h, "model.layers.1.block_sparse_moe.experts.5.w3.weight")),
                    bytes(m, "decoder.layers.1.mlp.experts.linear_fc1.weight5"));
            assertArrayEquals(bytes(h, "model.layers.1.block_sparse_moe.experts.5.w2.weight"), bytes(m, "decoder.layers.1.mlp.experts.linear_fc2.weight5"));
            assertArrayEquals(bytes(h, "model.layers.0.self_attn.q_norm.weight"), bytes(m, "decoder.layers.0.self_attention.q_layernorm.weight"));
            MemorySegment bias = h.tensor("model.layers.1.block_sparse_moe.e_score_correction_bias").bytes(arena);
            MemorySegment expertBias = m.tensor("decoder.layers.1.mlp.router.expert_bias").bytes(arena);
            assertEquals(DType.F32, m.tensor("decoder.layers.1.mlp.router.expert_bias").dtype());
            for (int e = 0; e < 8; e++) {
                assertEquals(bf16(bias, e), expertBias.getAtIndex(java.lang.foreign.ValueLayout.JAVA_FLOAT_UNALIGNED, e), "expert " + e);
            }
        }
    }

    /**
     * GLM-4.5, built here from the HF tensors: 4 query heads in 2 KV groups of 32 rows, so linear_qkv's bias is per group
     * [q heads 2g, 2g+1 ; k_g ; v_g] (glm45_bridge.py QKVMapping of the biases, lines 147-152); layer 0 is dense
     * (first_k_dense_replace 1) with fc1 = [gate ; up] and its post-attention norm fused into fc1; layer 1 has shared experts.
     */
    @Test
    void glmBiasIsGroupedByKvHeadAndTheFirstLayerIsDense() {
        Path mcore = CliRun.succeeding("import", "--ckpt-format", "safetensors", "--in", hf("glm4_moe").toString(), "--out", tmp.resolve("g").toString());
        try (Checkpoint h = Checkpoints.open(hf("glm4_moe")); Checkpoint m = Checkpoints.open(mcore)) {
            byte[] q = bytes(h, "model.layers.1.self_attn.q_proj.bias");
            byte[] k = bytes(h, "model.layers.1.self_attn.k_proj.bias");
            byte[] v = bytes(h, "model.layers.1.self_attn.v_proj.bias");
            int headBytes = 32 * 2;
            java.io.ByteArrayOutputStream qkv = new java.io.ByteArrayOutputStream();
            for (int g = 0; g < 2; g++) {
                qkv.write(q, g * 2 * headBytes, 2 * headBytes);
                qkv.write(k, g * headBytes, headBytes);
                qkv.write(v, g * headBytes, headBytes);
            }
            assertArrayEquals(qkv.toByteArray(), bytes(m, "decoder.layers.1.self_attention.linear_qkv.bias"));
            assertArrayEquals(concat(bytes(h, "model.layers.0.mlp.gate_proj.weight"), bytes(h, "model.layers.0.mlp.up_proj.weight")),
                    bytes(m, "decoder.layers.0.mlp.linear_fc1.weight"));
            assertArrayEquals(bytes(h, "model.layers.0.post_attention_layernorm.weight"), bytes(m, "decoder.layers.0.mlp.linear_fc1.layer_norm_weight"));
            assertArrayEquals(concat(bytes(h, "model.layers.1.mlp.shared_experts.gate_proj.weight"), bytes(h, "model.layers.1.mlp.shared_experts.up_proj.weight")),
                    bytes(m, "decoder.layers.1.mlp.shared_experts.linear_fc1.weight"));
            assertArrayEquals(bytes(h, "model.layers.1.self_attn.q_norm.weight"), bytes(m, "decoder.layers.1.self_attention.q_layernorm.weight"));
            assertFalse(m.contains("decoder.layers.0.mlp.router.weight"));
        }
    }

    /**
     * ERNIE 4.5, built here from the HF tensors: its [1, experts] expert bias is Megatron's flat [experts] expert_bias in f32
     * (ernie_45_bridge.py, _SqueezeBiasMapping, lines 106-134); moe_layer_start_index 1 leaves layer 0 dense.
     */
    @Test
    void ernieExpertBiasLosesItsGroupDimensionAndTheFirstLayerIsDense() {
        Path mcore = CliRun.succeeding("import", "--ckpt-format", "safetensors", "--in", hf("ernie4_5_moe").toString(), "--out", tmp.resolve("e").toString());
        try (Checkpoint h = Checkpoints.open(hf("ernie4_5_moe")); Checkpoint m = Checkpoints.open(mcore); Arena arena = Arena.ofConfined()) {
            Tensor expertBias = m.tensor("decoder.layers.2.mlp.router.expert_bias");
            assertEquals(Shape.of(8), expertBias.shape());
            MemorySegment hfBias = h.tensor("model.layers.2.mlp.moe_statics.e_score_correction_bias").bytes(arena);
            MemorySegment mcoreBias = expertBias.bytes(arena);
            for (int e = 0; e < 8; e++) {
                assertEquals(bf16(hfBias, e), mcoreBias.getAtIndex(java.lang.foreign.ValueLayout.JAVA_FLOAT_UNALIGNED, e), "expert " + e);
            }
            assertArrayEquals(concat(bytes(h, "model.layers.1.mlp.shared_experts.gate_proj.weight"), bytes(h, "model.layers.1.mlp.shared_experts.up_proj.weight")),
                    bytes(m, "decoder.layers.1.mlp.shared_experts.linear_fc1.weight"));
            assertArrayEquals(concat(bytes(h, "model.layers.0.mlp.gate_proj.weight"), bytes(h, "model.layers.0.mlp.up_proj.weight")),
                    bytes(m, "decoder.layers.0.mlp.linear_fc1.weight"));
            assertFalse(m.contains("decoder.layers.0.mlp.router.weight"));
            assertFalse(m.contains("output_layer.weight"), "tied embeddings: no output layer");
        }
    }

    /**
     * NemotronH with latent MoE: the latent projections are copied under Megatron-Bridge's names (nemotron_h_bridge.py
     * lines 426-427), and the routed experts work in the latent space: fc1 of expert e is up_proj [moe_intermediate_size,
     * moe_latent_size] as it is (relu2, not gated).
     */
    @Test
    void nemotronLatentProjectionsAndLatentExperts() {
        Path mcore = CliRun.succeeding("import", "--ckpt-format", "safetensors", "--in", hf("nemotron_h_latent").toString(), "--out", tmp.resolve("n").toString());
        try (Checkpoint h = Checkpoints.open(hf("nemotron_h_latent")); Checkpoint m = Checkpoints.open(mcore)) {
            assertArrayEquals(bytes(h, "backbone.layers.2.mixer.fc1_latent_proj.weight"), bytes(m, "decoder.layers.2.mlp.fc1_latent_proj.weight"));
            assertArrayEquals(bytes(h, "backbone.layers.4.mixer.fc2_latent_proj.weight"), bytes(m, "decoder.layers.4.mlp.fc2_latent_proj.weight"));
            assertEquals(Shape.of(64, 64), m.tensor("decoder.layers.2.mlp.experts.linear_fc1.weight6").shape());
            assertArrayEquals(bytes(h, "backbone.layers.2.mixer.experts.6.up_proj.weight"), bytes(m, "decoder.layers.2.mlp.experts.linear_fc1.weight6"));
        }
    }

    @Test
    void anUnknownArchitectureListsTheSupportedOnes() throws Exception {
        ObjectMapper json = new ObjectMapper();
        ObjectNode config = (ObjectNode) json.readTree(hf("qwen3_moe").resolve("config.json").toFile());
        config.putArray("architectures").add("LlamaForCausalLM");
        Path dir = Files.createDirectories(tmp.resolve("llama"));
        json.writeValue(dir.resolve("config.json").toFile(), config);
        Files.copy(hf("qwen3_moe").resolve("model.safetensors.index.json"), dir.resolve("model.safetensors.index.json"));
        CliRun r = CliRun.of("import", "--ckpt-format", "safetensors", "--in", dir.toString(), "--out", tmp.resolve("x").toString());
        assertEquals(1, r.code());
        assertTrue(r.err().contains("architecture 'LlamaForCausalLM' is not supported; supported: nemotron_h (NemotronHForCausalLM), "
                + "qwen3_moe (Qwen3MoeForCausalLM), mixtral (MixtralForCausalLM), deepseek_v3 (DeepseekV3ForCausalLM), gpt_oss (GptOssForCausalLM), "
                + "olmoe (OlmoeForCausalLM), minimax_m2 (MiniMaxM2ForCausalLM), glm4_moe (Glm4MoeForCausalLM), "
                + "ernie4_5_moe (Ernie4_5_MoeForCausalLM)"), r.err());
        CliRun list = CliRun.of("export", "--list-architectures");
        assertEquals(Architectures.all().size(), list.out().lines().count());
    }
}
