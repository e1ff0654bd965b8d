package dev.moeport.format.torchdist;

import static dev.moeport.testing.TestCheckpoints.assertSameTensors;
import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.moeport.cli.CliRun;
import dev.moeport.tensor.DType;
import dev.moeport.testing.Shared;
import java.io.ByteArrayInputStream;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Map;
import java.util.TreeMap;
import java.util.zip.ZipEntry;
import java.util.zip.ZipInputStream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/**
 * {@code import --ckpt-format torch_dist} against what Megatron-Core itself saves: the two checkpoints in
 * {@code fixtures/megatron/} were written by Megatron-Core's {@code dist_checkpointing.save} (local spec; see
 * their GENERATED_BY) from the same fixtures' weights, so their keys, global shapes, dtypes and chunks are the
 * expectation; and export of the import gives back the transformers-written folder bit for bit.
 */
class TorchDistImportTest {
    private static final Path MEGATRON = Path.of("fixtures/megatron");

    @TempDir
    Path tmp;

    private static Path hf(String arch) {
        return Shared.fixture(arch).resolve("hf");
    }

    private static TorchDistMetadata metadata(Path dir) throws Exception {
        try (FileChannel ch = FileChannel.open(dir.resolve(".metadata"), StandardOpenOption.READ); Arena arena = Arena.ofConfined()) {
            MemorySegment data = ch.map(FileChannel.MapMode.READ_ONLY, 0, ch.size(), arena);
            return TorchDistMetadata.parse(data, dir.toString());
        }
    }

    /** Each key as Megatron describes it: dtype, global shape, and its chunks when {@code withChunks}. */
    private static Map<String, String> describe(TorchDistMetadata m, boolean withChunks) {
        Map<String, String> out = new TreeMap<>();
        m.entries().forEach((key, entry) -> out.put(key, switch (entry) {
            case TorchDistMetadata.TensorEntry t -> t.dtype() + java.util.Arrays.toString(t.size())
                    + (withChunks ? t.chunks().stream().map(b -> java.util.Arrays.toString(b.offsets()) + java.util.Arrays.toString(b.sizes()))
                    .sorted().toList() : "");
            case TorchDistMetadata.BytesEntry b -> "bytes";
        }));
        return out;
    }

    @Test
    void localSpecImportHasTheKeysShapesAndChunksMegatronSaves() throws Exception {
        // qwen3_moe: a dense first layer, so Megatron-Core keys every layer on its own; saved from TP1/EP1.
        Path out = CliRun.succeeding("import", "--in", hf("qwen3_moe").toString(), "--out", tmp.resolve("q").toString(), "--megatron-spec", "local");
        assertEquals(describe(metadata(MEGATRON.resolve("qwen3_moe_local_tp1")), true), describe(metadata(out.resolve("iter_0000000")), true));
        // mixtral: homogeneous layers, stacked [L, ...]; Megatron's copy was saved from TP2/EP2, so only keys,
        // dtypes and global shapes can agree (its chunks follow its parallelism).
        Path mixtral = CliRun.succeeding("import", "--in", hf("mixtral").toString(), "--out", tmp.resolve("m").toString(), "--megatron-spec", "local");
        assertEquals(describe(metadata(MEGATRON.resolve("mixtral_local_tp2ep2")), false), describe(metadata(mixtral.resolve("iter_0000000")), false));
    }

    /**
     * Gated DeltaNet's and Mamba's in_proj and conv1d, which Megatron-Core saves as one key per row section, each
     * sharded by TP on its own: {@code megatron/core/ssm/gated_delta_net/gdn.py:50-58} (in_proj by query, key, value,
     * z, beta, alpha), {@code gated_delta_net/common.py:561-568} (conv1d by query, key, value; no conv bias),
     * {@code ssm/mamba_mixer.py:1406-1415} (in_proj by z, x, B, C, dt) and {@code 1464-1471} (conv1d weight and bias
     * by x, B, C). The sections' sizes are computed here from config.json. moeport's import (one rank) holds each in
     * one chunk; Megatron's own TP2 save of the same model holds the same keys and global shapes, in two chunks along
     * the rows.
     */
    @ParameterizedTest
    @ValueSource(strings = {"qwen3_next:qwen3_next_local_tp2ep2", "nemotron_h_tiny:nemotron_h_tiny_local_tp2ep2"})
    void splitSectionsHaveTheKeysShapesAndChunksMegatronCoreSaves(String pair) throws Exception {
        String[] p = pair.split(":");
        JsonNode config = new ObjectMapper().readTree(hf(p[0]).resolve("config.json").toFile());
        Path out = CliRun.succeeding("import", "--in", hf(p[0]).toString(), "--out", tmp.resolve("i").toString(), "--megatron-spec", "local");
        assertEquals(splitSections(config, 1), splitKeys(describe(metadata(out.resolve("iter_0000000")), true)));
        assertEquals(splitSections(config, 2), splitKeys(describe(metadata(MEGATRON.resolve(p[1])), true)));
        assertEquals(describe(metadata(MEGATRON.resolve(p[1])), false), describe(metadata(out.resolve("iter_0000000")), false));
    }

    private static Map<String, String> splitKeys(Map<String, String> described) {
        Map<String, String> out = new TreeMap<>(described);
        out.keySet().removeIf(k -> !k.matches(".*\\.(in_proj\\.weight|conv1d\\.weight|conv1d\\.bias)(\\..*)?"));
        return out;
    }

    /** The split keys of every Gated DeltaNet or Mamba layer, described as {@link #describe} does, at tensor parallelism {@code tp}. */
    private static Map<String, String> splitSections(JsonNode c, int tp) {
        Map<String, String> out = new TreeMap<>();
        int hidden = c.get("hidden_size").asInt();
        boolean mamba = c.has("layers_block_type");
        JsonNode kinds = mamba ? c.get("layers_block_type") : c.get("layer_types");
        for (int layer = 0; layer < kinds.size(); layer++) {
            String kind = kinds.get(layer).asText();
            if (!kind.equals("linear_attention") && !kind.equals("mamba")) {
                continue;
            }
            Map<String, Long> inProj = new java.util.LinkedHashMap<>();
            Map<String, Long> conv = new java.util.LinkedHashMap<>();
            String prefix;
            int kernel;
            if (mamba) {
                prefix = "decoder.layers." + layer + ".mixer.";
                long heads = c.get("mamba_num_heads").asLong();
                long inner = heads * c.get("mamba_head_dim").asLong();
                long groupStates = c.get("n_groups").asLong() * c.get("ssm_state_size").asLong();
                inProj.putAll(Map.of("z", inner, "x", inner, "B", groupStates, "C", groupStates, "dt", heads));
                conv.putAll(Map.of("x", inner, "B", groupStates, "C", groupStates));
                kernel = c.get("conv_kernel").asInt();
            } else {
                prefix = "decoder.layers." + layer + ".self_attention.";
                long qk = c.get("linear_num_key_heads").asLong() * c.get("linear_key_head_dim").asLong();
                long valueHeads = c.get("linear_num_value_heads").asLong();
                long v = valueHeads * c.get("linear_value_head_dim").asLong();
                inProj.putAll(Map.of("query", qk, "key", qk, "value", v, "z", v, "beta", valueHeads, "alpha", valueHeads));
                conv.putAll(Map.of("query", qk, "key", qk, "value", v));
                kernel = c.get("linear_conv_kernel_dim").asInt();
            }
            inProj.forEach((name, rows) -> out.put(prefix + "in_proj.weight." + name, rowChunks(new long[] {rows, hidden}, tp)));
            conv.forEach((name, rows) -> {
                out.put(prefix + "conv1d.weight." + name, rowChunks(new long[] {rows, 1, kernel}, tp));
                if (mamba) { // use_conv_bias; Qwen3-Next's conv1d has none
                    out.put(prefix + "conv1d.bias." + name, rowChunks(new long[] {rows}, tp));
                }
            });
        }
        return out;
    }

    /** A BF16 tensor of {@code size} in {@code tp} equal chunks along its rows, as {@link #describe} writes it. */
    private static String rowChunks(long[] size, int tp) {
        java.util.List<String> chunks = new java.util.ArrayList<>();
        for (int rank = 0; rank < tp; rank++) {
            long[] offsets = new long[size.length];
            long[] sizes = size.clone();
            sizes[0] = size[0] / tp;
            offsets[0] = rank * sizes[0];
            chunks.add(java.util.Arrays.toString(offsets) + java.util.Arrays.toString(sizes));
        }
        return DType.BF16 + java.util.Arrays.toString(size) + chunks.stream().sorted().toList();
    }

    @Test
    void transformerEngineSpecNamesTheMoeLayersPreMlpNorm() throws Exception {
        Path out = CliRun.succeeding("import", "--in", hf("qwen3_moe").toString(), "--out", tmp.resolve("q").toString());
        Map<String, String> keys = describe(metadata(out.resolve("iter_0000000")), false);
        assertTrue(keys.containsKey("decoder.layers.1.pre_mlp_layernorm.weight"), keys.keySet().toString());
        assertTrue(keys.containsKey("decoder.layers.0.mlp.linear_fc1.layer_norm_weight"));
        assertEquals("0", Files.readString(out.resolve("latest_checkpointed_iteration.txt")));
        assertEquals("{\"sharded_backend\": \"torch_dist\", \"sharded_backend_version\": 1}", Files.readString(out.resolve("iter_0000000/metadata.json")));
    }

    @ParameterizedTest
    @ValueSource(strings = {"nemotron_h_tiny", "qwen3_moe", "mixtral", "deepseek_v3", "gpt_oss"})
    void importThenExportReproducesTheHfFolderBitForBit(String arch) {
        for (String spec : java.util.List.of("te", "local")) {
            // The local spec's run also spreads the chunks over several data files (__<k>_0.distcp).
            Path mcore = CliRun.succeeding("import", "--in", hf(arch).toString(), "--out", tmp.resolve(arch + spec).toString(), "--megatron-spec", spec,
                    "--max-shard-size", spec.equals("local") ? "1MB" : "5GB");
            Path back = CliRun.succeeding("export", "--in", mcore.toString(), "--hf-config", hf(arch).toString(), "--out", tmp.resolve(arch + spec + "-hf").toString());
            assertSameTensors(hf(arch), back);
        }
    }

    @ParameterizedTest
    @ValueSource(strings = {"qwen3_moe_local_tp1:qwen3_moe", "mixtral_local_tp2ep2:mixtral", "qwen3_next_local_tp2ep2:qwen3_next",
        "nemotron_h_tiny_local_tp2ep2:nemotron_h_tiny"})
    void checkpointsMegatronSavedExportToTheHfFolder(String pair) {
        String[] p = pair.split(":");
        Path back = CliRun.succeeding("export", "--in", MEGATRON.resolve(p[0]).toString(), "--hf-config", hf(p[1]).toString(), "--out", tmp.resolve("hf").toString());
        assertSameTensors(hf(p[1]), back);
    }

    /** PyTorch's writer names the folder it writes in (StorageMeta.checkpoint_id): the iteration folder in place, not the staging one. */
    @Test
    void metadataNamesTheIterationFolderInPlace() throws Exception {
        Path out = CliRun.succeeding("import", "--in", hf("qwen3_moe").toString(), "--out", tmp.resolve("q").toString());
        String metadata = new String(Files.readAllBytes(out.resolve("iter_0000000/.metadata")), java.nio.charset.StandardCharsets.ISO_8859_1);
        assertTrue(metadata.contains(new String(out.resolve("iter_0000000").toString().getBytes(java.nio.charset.StandardCharsets.UTF_8),
                java.nio.charset.StandardCharsets.ISO_8859_1)), "the iteration folder's path in .metadata");
        assertFalse(metadata.contains(".moeport-staging"), "the staging folder's path in .metadata");
    }

    @Test
    void routerExpertBiasIsKeptInFloat32AsMegatronDoes() throws Exception {
        Path out = CliRun.succeeding("import", "--in", hf("deepseek_v3").toString(), "--out", tmp.resolve("d").toString());
        TorchDistMetadata m = metadata(out.resolve("iter_0000000"));
        var bias = (TorchDistMetadata.TensorEntry) m.entries().get("decoder.layers.1.mlp.router.expert_bias");
        assertEquals(DType.F32, bias.dtype());
        assertEquals(DType.BF16, ((TorchDistMetadata.TensorEntry) m.entries().get("decoder.layers.1.mlp.router.weight")).dtype());
    }

    @Test
    void everyChunkIsAZipThatJavaReadsWithMatchingCrcs() throws Exception {
        Path out = CliRun.succeeding("import", "--in", hf("mixtral").toString(), "--out", tmp.resolve("m").toString());
        Path dir = out.resolve("iter_0000000");
        TorchDistMetadata m = metadata(dir);
        byte[] file = Files.readAllBytes(dir.resolve("__0_0.distcp"));
        int zips = 0;
        for (TorchDistMetadata.StorageInfo info : m.storage().values()) {
            byte[] zip = java.util.Arrays.copyOfRange(file, (int) info.offset(), (int) (info.offset() + info.length()));
            // ZipInputStream reads the local headers and checks each STORED entry's CRC-32 as it reads it.
            try (ZipInputStream in = new ZipInputStream(new ByteArrayInputStream(zip))) {
                int entries = 0;
                for (ZipEntry e; (e = in.getNextEntry()) != null; entries++) {
                    assertEquals(ZipEntry.STORED, e.getMethod());
                    in.readAllBytes();
                }
                assertTrue(entries >= 6, "entries of a torch.save zip");
            }
            zips++;
        }
        assertEquals(m.storage().size(), zips);
        // The CRCs are real: a flipped byte in the middle of a tensor's data is caught.
        TorchDistMetadata.StorageInfo big = m.storage().values().stream().filter(i -> i.length() > 100_000).findFirst().orElseThrow();
        byte[] zip = java.util.Arrays.copyOfRange(file, (int) big.offset(), (int) (big.offset() + big.length()));
        zip[zip.length / 2] ^= 1;
        try (ZipInputStream in = new ZipInputStream(new ByteArrayInputStream(zip))) {
            org.junit.jupiter.api.Assertions.assertThrows(java.util.zip.ZipException.class, () -> {
                while (in.getNextEntry() != null) {
                    in.readAllBytes();
                }
            });
        }
    }

    @Test
    void badOptionsAreUsageErrors() {
        assertEquals(2, CliRun.of("import", "--in", hf("qwen3_moe").toString(), "--out", tmp.resolve("x").toString(), "--ckpt-format", "zip").code());
        assertEquals(2, CliRun.of("import", "--in", hf("qwen3_moe").toString(), "--out", tmp.resolve("x").toString(), "--experts", "te").code());
        assertEquals(2, CliRun.of("import", "--in", hf("qwen3_moe").toString(), "--out", tmp.resolve("x").toString(), "--megatron-spec", "apex").code());
        CliRun stacked = CliRun.of("import", "--in", hf("qwen3_moe").toString(), "--out", tmp.resolve("y").toString(), "--layer-keys", "stacked");
        assertEquals(1, stacked.code());
        assertTrue(stacked.err().contains("do not all hold the same tensors"), stacked.err());
        assertTrue(Files.notExists(tmp.resolve("y").resolve("latest_checkpointed_iteration.txt")));
    }

    @Test
    void perLayerKeysOnRequest() throws Exception {
        Path out = CliRun.succeeding("import", "--in", hf("mixtral").toString(), "--out", tmp.resolve("m").toString(), "--layer-keys", "per-layer");
        Map<String, String> keys = describe(metadata(out.resolve("iter_0000000")), false);
        assertTrue(keys.containsKey("decoder.layers.1.mlp.experts.experts.linear_fc1.weight"), keys.keySet().toString());
        assertArrayEquals(new long[] {8, 256, 256},
                ((TorchDistMetadata.TensorEntry) metadata(out.resolve("iter_0000000")).entries().get("decoder.layers.1.mlp.experts.experts.linear_fc1.weight")).size());
        assertSameTensors(hf("mixtral"), CliRun.succeeding("export", "--in", out.toString(), "--hf-config", hf("mixtral").toString(), "--out", tmp.resolve("b").toString()));
    }
}
