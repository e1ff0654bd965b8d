package dev.moeport.convert;

import static dev.moeport.testing.TestCheckpoints.assertSameTensors;
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
import dev.moeport.tensor.FloatFormats;
import dev.moeport.tensor.Tensor;
import dev.moeport.testing.Shared;
import dev.moeport.testing.TestCheckpoints.Entry;
import dev.moeport.testing.TestCheckpoints;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** {@code moeport export} of the NemotronH fixture: Megatron-Core layouts to the HF folder transformers wrote. */
class ExportNemotronHTest {
    private static final Path FIXTURE = Shared.fixture("nemotron_h_tiny");
    private static final Path HF = FIXTURE.resolve("hf");

    @TempDir
    Path tmp;

    private CliRun export(Path in, Path hfConfig, Path out, String... extra) {
        List<String> args = new ArrayList<>(List.of("export", "--in", in.toString(), "--hf-config", hfConfig.toString(), "--out", out.toString()));
        args.addAll(List.of(extra));
        return CliRun.of(args.toArray(String[]::new));
    }

    @Test
    void teGroupedExpertsReproduceTheHfFolderBitForBit() throws Exception {
        Path out = tmp.resolve("te");
        CliRun r = export(FIXTURE.resolve("mcore_te"), HF, out);
        assertEquals(0, r.code(), r.err());
        assertSameTensors(HF, out);
        assertEquals(Files.readString(HF.resolve("config.json")), Files.readString(out.resolve("config.json")), "config copied unchanged");
        assertTrue(Files.exists(out.resolve("generation_config.json")));
        assertTrue(r.out().contains("exported 71 tensors"), r.out());
    }

    @Test
    void sequentialExpertsReproduceTheHfFolderBitForBit() {
        Path out = tmp.resolve("seq");
        CliRun r = export(FIXTURE.resolve("mcore_seq"), HF, out, "--max-shard-size", "1MB", "--threads", "3");
        assertEquals(0, r.code(), r.err());
        assertSameTensors(HF, out);
        assertTrue(Files.exists(out.resolve("model.safetensors.index.json")));
    }

    @Test
    void torchDistCheckpointReproducesTheHfFolderBitForBit() {
        // Written by PyTorch's torch.distributed.checkpoint from mcore_te (scripts/fixtures/make_torch_dist.py).
        Path out = tmp.resolve("torch-dist");
        CliRun r = export(Path.of("fixtures/torch_dist/nemotron_h_tiny"), HF, out);
        assertEquals(0, r.code(), r.err());
        assertSameTensors(HF, out);
    }

    @Test
    void stackedExpertsReproduceTheHfFolderBitForBit() throws Exception {
        Path stacked = tmp.resolve("stacked");
        try (Checkpoint te = Checkpoints.open(FIXTURE.resolve("mcore_te"))) {
            List<Entry> entries = TestCheckpoints.entries(te, n -> !n.contains(".experts.linear_fc"));
            for (int layer : new int[] {2, 5}) {
                for (String fc : new String[] {"linear_fc1", "linear_fc2"}) {
                    String base = "decoder.layers." + layer + ".mlp.experts." + fc + ".weight";
                    List<Tensor> experts = new ArrayList<>();
                    for (int e = 0; e < 8; e++) {
                        experts.add(te.tensor(base + e));
                    }
                    entries.add(new Entry(base, experts.getFirst().shape().prepend(8), experts));
                }
            }
            TestCheckpoints.write(stacked, entries, 1L << 30);
        }
        Path out = tmp.resolve("out");
        CliRun r = export(stacked, HF, out);
        assertEquals(0, r.code(), r.err());
        assertSameTensors(HF, out);
    }

    @Test
    void aMissingExpertIsAnErrorNamingIt() throws Exception {
        Path broken = tmp.resolve("broken");
        try (Checkpoint te = Checkpoints.open(FIXTURE.resolve("mcore_te"))) {
            TestCheckpoints.write(broken, TestCheckpoints.entries(te, n -> !n.equals("decoder.layers.5.mlp.experts.linear_fc1.weight5")), 1L << 30);
        }
        Path out = tmp.resolve("out");
        CliRun r = export(broken, HF, out);
        assertEquals(1, r.code());
        assertEquals("moeport: error: " + broken + ": missing tensor 'decoder.layers.5.mlp.experts.linear_fc1.weight5' (expert 5), needed for "
                + "mlp.experts.linear_fc1.weight{e} -> mixer.experts.{e}.up_proj.weight (copy, moe layers)", r.err().strip());
        assertFalse(Files.exists(out), "nothing written");
    }

    @Test
    void anUnmappedTensorIsAnErrorUnlessAllowed() throws Exception {
        Path extra = tmp.resolve("extra");
        try (Checkpoint te = Checkpoints.open(FIXTURE.resolve("mcore_te"))) {
            List<Entry> entries = TestCheckpoints.entries(te, n -> true);
            entries.add(Entry.of("decoder.layers.2.mlp.experts.linear_fc1.weight8", te.tensor("decoder.layers.2.mlp.experts.linear_fc1.weight7")));
            TestCheckpoints.write(extra, entries, 1L << 30);
        }
        CliRun r = export(extra, HF, tmp.resolve("out"));
        assertEquals(1, r.code());
        assertTrue(r.err().contains("1 tensor(s) not mapped by any nemotron_h rule: decoder.layers.2.mlp.experts.linear_fc1.weight8"), r.err());
        CliRun allowed = export(extra, HF, tmp.resolve("out"), "--allow-unmapped");
        assertEquals(0, allowed.code(), allowed.err());
        assertTrue(allowed.out().contains("skipped 1 unmapped tensor(s): decoder.layers.2.mlp.experts.linear_fc1.weight8"), allowed.out());
        assertSameTensors(HF, tmp.resolve("out"));
    }

    @Test
    void transformerEngineAndQuantizerStateAreNotCopied() throws Exception {
        Path extra = tmp.resolve("extra");
        try (Checkpoint te = Checkpoints.open(FIXTURE.resolve("mcore_te"))) {
            List<Entry> entries = TestCheckpoints.entries(te, n -> true);
            Tensor someBytes = te.tensor("decoder.layers.0.mixer.A_log");
            entries.add(Entry.of("decoder.layers.1.self_attention.linear_qkv._extra_state", someBytes));
            entries.add(Entry.of("decoder.layers.1.self_attention.linear_proj.weight_quantizer._amax", te.tensor("decoder.layers.0.mixer.D").narrow(0, 1, "amax")));
            TestCheckpoints.write(extra, entries, 1L << 30);
        }
        CliRun r = export(extra, HF, tmp.resolve("out"));
        assertEquals(0, r.code(), r.err());
        assertSameTensors(HF, tmp.resolve("out"));
    }

    private Path configWith(String key, Object value) throws Exception {
        ObjectMapper json = new ObjectMapper();
        ObjectNode config = (ObjectNode) json.readTree(HF.resolve("config.json").toFile());
        config.set(key, json.valueToTree(value));
        Path dir = Files.createDirectories(tmp.resolve("hf-" + key));
        json.writeValue(dir.resolve("config.json").toFile(), config);
        return dir;
    }

    @Test
    void aConfigThatDoesNotMatchTheTensorsIsAnError() throws Exception {
        CliRun fewerExperts = export(FIXTURE.resolve("mcore_te"), configWith("n_routed_experts", 6), tmp.resolve("a"));
        assertEquals(1, fewerExperts.code());
        assertTrue(fewerExperts.err().contains("has shape [8, 256] but") && fewerExperts.err().contains("implies [6, 256] (n_routed_experts = 6)"), fewerExperts.err());

        CliRun wrongSize = export(FIXTURE.resolve("mcore_te"), configWith("moe_intermediate_size", 64), tmp.resolve("b"));
        assertEquals(1, wrongSize.code());
        assertTrue(wrongSize.err().contains("moe_intermediate_size = 64"), wrongSize.err());

        CliRun heads = export(FIXTURE.resolve("mcore_te"), configWith("num_key_value_heads", 1), tmp.resolve("c"));
        assertEquals(1, heads.code());
        assertTrue(heads.err().contains("has 512 rows, but"), heads.err());

        CliRun unknown = export(FIXTURE.resolve("mcore_te"), configWith("architectures", List.of("FooForCausalLM")), tmp.resolve("d"));
        assertEquals(1, unknown.code());
        assertTrue(unknown.err().contains("architecture 'FooForCausalLM' is not supported; supported: nemotron_h (NemotronHForCausalLM)"), unknown.err());
    }

    @Test
    void hybridOverridePatternGivesTheSameLayers() throws Exception {
        ObjectMapper json = new ObjectMapper();
        ObjectNode config = (ObjectNode) json.readTree(HF.resolve("config.json").toFile());
        config.remove("layers_block_type");
        config.put("hybrid_override_pattern", "M*EM-E");
        Path dir = Files.createDirectories(tmp.resolve("hf-pattern"));
        json.writeValue(dir.resolve("config.json").toFile(), config);
        CliRun r = export(FIXTURE.resolve("mcore_te"), dir, tmp.resolve("out"));
        assertEquals(0, r.code(), r.err());
        assertSameTensors(HF, tmp.resolve("out"));
    }

    @Test
    void dryRunPrintsThePlanAndWritesNothing() throws Exception {
        Path out = tmp.resolve("never");
        CliRun text = export(FIXTURE.resolve("mcore_te"), HF, out, "--dry-run");
        assertEquals(0, text.code(), text.err());
        // The HF folder's config.json (1.77 kB) and generation_config.json (216 B) are copied beside the weights.
        assertTrue(text.out().contains("plan: 71 tensors, 6.00 MB in 1 shard(s) and 2 other file(s) (1.99 kB), from 6.00 MB of input;"
                + " nothing written (dry run)"), text.out());
        assertTrue(text.out().matches("(?s).*\\ngeneration_config\\.json\\s+216 B\\s+copy of \\S+generation_config\\.json\\n.*"), text.out());
        assertTrue(text.out().matches("(?s).*backbone\\.layers\\.1\\.mixer\\.k_proj\\.weight\\s+BF16\\s+\\[128, 256\\].*gather rows\\s+"
                + "decoder\\.layers\\.1\\.self_attention\\.linear_qkv\\.weight\\[128:192\\] \\+ decoder\\.layers\\.1\\.self_attention\\.linear_qkv\\.weight\\[384:448\\].*"),
                text.out());
        CliRun json = export(FIXTURE.resolve("mcore_te"), HF, out, "--dry-run", "--json", "--max-shard-size", "2MB");
        assertEquals(0, json.code(), json.err());
        JsonNode plan = new ObjectMapper().readTree(json.out());
        assertEquals(71, plan.get("tensors").size());
        assertEquals(4, plan.get("shard_count").asInt());
        assertEquals(5997440, plan.get("output_bytes").asLong());
        assertFalse(Files.exists(out));
    }

    @Test
    void refusesAnExistingOutputUnlessOverwrite() throws Exception {
        Path out = Files.createDirectories(tmp.resolve("out"));
        Files.writeString(out.resolve("something"), "x");
        CliRun refused = export(FIXTURE.resolve("mcore_te"), HF, out);
        assertEquals(1, refused.code());
        assertTrue(refused.err().contains("output folder exists and is not empty (give --overwrite"), refused.err());
        CliRun first = export(FIXTURE.resolve("mcore_seq"), HF, out, "--max-shard-size", "1MB", "--overwrite");
        assertEquals(0, first.code(), first.err());
        CliRun second = export(FIXTURE.resolve("mcore_te"), HF, out, "--overwrite");
        assertEquals(0, second.code(), second.err());
        assertFalse(Files.exists(out.resolve("model.safetensors.index.json")), "old index removed");
        assertSameTensors(HF, out);
    }

    @Test
    void anOverwriteThatFailsLeavesTheEarlierCheckpointAndTheInputIsNeverTheOutput() throws Exception {
        Path out = tmp.resolve("out");
        assertEquals(0, export(FIXTURE.resolve("mcore_seq"), HF, out, "--max-shard-size", "1MB").code());
        // A run that fails (here: a NaN to quantize) must not have removed the earlier checkpoint.
        Path broken = tmp.resolve("nan");
        try (Checkpoint te = Checkpoints.open(FIXTURE.resolve("mcore_te"))) {
            List<Entry> entries = TestCheckpoints.entries(te, n -> !n.endsWith("layers.1.self_attention.linear_proj.weight"));
            byte[] nan = new byte[256 * 256 * 2];
            java.lang.foreign.MemorySegment.ofArray(nan).setAtIndex(FloatFormats.SHORT_LE, 1000, (short) 0x7FC0);
            entries.add(Entry.of("decoder.layers.1.self_attention.linear_proj.weight",
                    TestCheckpoints.bytes("w", DType.BF16, dev.moeport.tensor.Shape.of(256, 256), nan)));
            TestCheckpoints.write(broken, entries, 1L << 30);
        }
        CliRun failed = export(broken, HF, out, "--overwrite", "--format", "nvfp4");
        assertEquals(1, failed.code(), failed.err());
        assertSameTensors(HF, out);
        // The output may not be (or hold) an input: an overwrite would destroy it.
        CliRun same = CliRun.of("quantize", "--format", "fp8", "--in", out.toString(), "--out", out.toString(), "--overwrite");
        assertEquals(1, same.code());
        assertTrue(same.err().contains("the output folder must be apart from the input"), same.err());
        CliRun inside = export(FIXTURE.resolve("mcore_te"), HF, HF.resolve("sub"));
        assertEquals(1, inside.code());
        assertTrue(inside.err().contains("must be apart from the input"), inside.err());
        assertSameTensors(HF, out);
    }

    @Test
    void dtypeCastsWeightsButNotMambaParametersOrTheExpertBias() throws Exception {
        Set<String> kept = Set.of("A_log", "D", "dt_bias", "e_score_correction_bias");
        for (DType target : List.of(DType.F32, DType.F16)) {
            Path out = tmp.resolve(target.name());
            CliRun r = export(FIXTURE.resolve("mcore_te"), HF, out, "--dtype", target.name().toLowerCase());
            assertEquals(0, r.code(), r.err());
            try (Checkpoint ref = Checkpoints.open(HF); Checkpoint got = Checkpoints.open(out); Arena arena = Arena.ofConfined()) {
                for (String name : ref.tensors().keySet()) {
                    Tensor a = ref.tensor(name);
                    Tensor b = got.tensor(name);
                    boolean keep = kept.contains(name.substring(name.lastIndexOf('.') + 1));
                    assertEquals(keep ? DType.BF16 : target, b.dtype(), name);
                    assertEquals(a.shape(), b.shape(), name);
                    MemorySegment x = a.bytes(arena);
                    MemorySegment y = b.bytes(arena);
                    for (long i = 0; i < a.numel(); i++) {
                        float bf16 = FloatFormats.read(x, DType.BF16, i);
                        // The oracle is the JDK's own float -> binary16 conversion (round to nearest even).
                        float expected = keep || target == DType.F32 ? bf16 : Float.float16ToFloat(Float.floatToFloat16(bf16));
                        assertEquals(Float.floatToIntBits(expected), Float.floatToIntBits(FloatFormats.read(y, b.dtype(), i)), name + "[" + i + "]");
                    }
                }
            }
        }
    }

    @Test
    void missingInputsGiveOneLine() {
        CliRun noIn = export(tmp.resolve("nope"), HF, tmp.resolve("o"));
        assertEquals(1, noIn.code());
        assertTrue(noIn.err().strip().endsWith("nope: no such file or folder"), noIn.err());
        CliRun noConfig = export(FIXTURE.resolve("mcore_te"), tmp, tmp.resolve("o"));
        assertEquals(1, noConfig.code());
        assertTrue(noConfig.err().contains("config.json: no such file"), noConfig.err());
        assertEquals(1, noConfig.err().strip().lines().count());
        assertEquals(2, CliRun.of("export", "--in", FIXTURE.resolve("mcore_te").toString()).code());
    }

    @Test
    void listsArchitectures() {
        CliRun r = CliRun.of("export", "--list-architectures");
        assertEquals(0, r.code());
        assertTrue(r.out().contains("nemotron_h  NemotronHForCausalLM"));
    }
}
