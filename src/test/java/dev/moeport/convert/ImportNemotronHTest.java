package dev.moeport.convert;

import static dev.moeport.testing.TestCheckpoints.assertSameTensors;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.moeport.cli.CliRun;
import dev.moeport.format.Checkpoint;
import dev.moeport.format.Checkpoints;
import dev.moeport.tensor.Shape;
import dev.moeport.tensor.Tensor;
import dev.moeport.testing.Shared;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** {@code moeport import}: the HF fixture back to the Megatron-Core layouts, and round trips. */
class ImportNemotronHTest {
    private static final Path FIXTURE = Shared.fixture("nemotron_h_tiny");
    private static final Path HF = FIXTURE.resolve("hf");

    @TempDir
    Path tmp;

    private Path importTo(String name, String... extra) {
        Path out = tmp.resolve(name);
        List<String> args = new ArrayList<>(List.of("import", "--ckpt-format", "safetensors", "--in", HF.toString(), "--out", out.toString()));
        args.addAll(List.of(extra));
        CliRun r = CliRun.of(args.toArray(String[]::new));
        assertEquals(0, r.code(), r.err());
        return out;
    }

    private Path exportFrom(Path mcore, String name) {
        Path out = tmp.resolve(name);
        CliRun r = CliRun.of("export", "--in", mcore.toString(), "--hf-config", HF.toString(), "--out", out.toString());
        assertEquals(0, r.code(), r.err());
        return out;
    }

    @Test
    void reproducesTheTeGroupedCheckpointBitForBit() {
        assertSameTensors(FIXTURE.resolve("mcore_te"), importTo("te"));
    }

    @Test
    void reproducesTheSequentialCheckpointBitForBit() {
        assertSameTensors(FIXTURE.resolve("mcore_seq"), importTo("seq", "--experts", "sequential"));
    }

    @Test
    void exportOfImportIsTheIdentityForEveryExpertLayout() {
        for (String layout : List.of("te", "sequential", "stacked")) {
            Path mcore = importTo("mcore-" + layout, "--experts", layout, "--max-shard-size", "1MB");
            assertSameTensors(HF, exportFrom(mcore, "hf-" + layout));
        }
    }

    @Test
    void stackedExpertsAreOneTensorPerLayerAndProjection() {
        Path mcore = importTo("stacked", "--experts", "stacked");
        try (Checkpoint c = Checkpoints.open(mcore); Checkpoint te = Checkpoints.open(FIXTURE.resolve("mcore_te")); Arena arena = Arena.ofConfined()) {
            Tensor stack = c.tensor("decoder.layers.5.mlp.experts.linear_fc2.weight");
            assertEquals(Shape.of(8, 256, 128), stack.shape());
            MemorySegment all = stack.bytes(arena);
            long slab = all.byteSize() / 8;
            for (int e = 0; e < 8; e++) {
                MemorySegment expected = te.tensor("decoder.layers.5.mlp.experts.linear_fc2.weight" + e).bytes(arena);
                assertEquals(-1, all.asSlice(e * slab, slab).mismatch(expected), "expert " + e);
            }
        }
    }

    @Test
    void padsTheVocabularyWithZerosAndExportTrimsIt() {
        Path mcore = importTo("padded", "--vocab-multiple", "1000");
        try (Checkpoint c = Checkpoints.open(mcore); Arena arena = Arena.ofConfined()) {
            for (String name : List.of("embedding.word_embeddings.weight", "output_layer.weight")) {
                Tensor t = c.tensor(name);
                assertEquals(Shape.of(2000, 256), t.shape());
                MemorySegment padding = t.narrow(1024, 976, "pad").bytes(arena);
                for (long i = 0; i < padding.byteSize(); i++) {
                    assertEquals(0, padding.get(ValueLayout.JAVA_BYTE, i), name + " padding byte " + i);
                }
            }
        }
        assertSameTensors(HF, exportFrom(mcore, "trimmed"));
    }

    @Test
    void badLayoutAndMissingTensorsAreClearErrors() {
        CliRun bad = CliRun.of("import", "--ckpt-format", "safetensors", "--in", HF.toString(), "--out", tmp.resolve("x").toString(), "--experts", "grouped");
        assertEquals(2, bad.code());
        assertTrue(bad.err().contains("--experts must be te, sequential or stacked"), bad.err());
        CliRun notHf = CliRun.of("import", "--ckpt-format", "safetensors", "--in", FIXTURE.resolve("mcore_te").toString(), "--out", tmp.resolve("y").toString());
        assertEquals(1, notHf.code());
        assertTrue(notHf.err().contains("config.json: no such file"), notHf.err());
    }
}
