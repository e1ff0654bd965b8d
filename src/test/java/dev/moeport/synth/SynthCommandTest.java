package dev.moeport.synth;

import static dev.moeport.testing.TestCheckpoints.assertSameTensors;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNotEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.moeport.cli.CliRun;
import dev.moeport.format.Checkpoint;
import dev.moeport.format.Checkpoints;
import dev.moeport.tensor.Shape;
import dev.moeport.testing.Shared;
import java.lang.foreign.Arena;
import java.lang.foreign.ValueLayout;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.TreeMap;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class SynthCommandTest {
    @TempDir
    Path tmp;

    private Path synth(String name, String... extra) {
        Path out = tmp.resolve(name);
        String[] args = new String[extra.length + 5];
        args[0] = "synth";
        args[1] = "--preset";
        args[2] = "tiny";
        args[3] = "--out";
        args[4] = out.toString();
        System.arraycopy(extra, 0, args, 5, extra.length);
        CliRun r = CliRun.of(args);
        assertEquals(0, r.code(), r.err());
        return out;
    }

    @Test
    void tinyPresetHasTheFixturesTensorsNamesAndShapes() {
        Path out = synth("a");
        try (Checkpoint fixture = Checkpoints.open(Shared.fixture("nemotron_h_tiny/mcore_te")); Checkpoint synthetic = Checkpoints.open(out.resolve("mcore"))) {
            TreeMap<String, Shape> expected = new TreeMap<>();
            fixture.tensors().forEach((n, t) -> expected.put(n, t.shape()));
            TreeMap<String, Shape> actual = new TreeMap<>();
            synthetic.tensors().forEach((n, t) -> actual.put(n, t.shape()));
            assertEquals(expected, actual);
        }
    }

    @Test
    void isDeterministicAndEveryLayoutExportsToTheSameHfCheckpoint() {
        Path te = synth("te");
        Path again = synth("again", "--threads", "1");
        assertSameTensors(te.resolve("mcore"), again.resolve("mcore"));
        Path other = synth("seed", "--seed", "7");
        try (Checkpoint a = Checkpoints.open(te.resolve("mcore")); Checkpoint b = Checkpoints.open(other.resolve("mcore")); Arena arena = Arena.ofConfined()) {
            String name = "decoder.layers.2.mlp.experts.linear_fc1.weight3";
            assertNotEquals(Arrays.toString(a.tensor(name).bytes(arena).toArray(ValueLayout.JAVA_BYTE)),
                    Arrays.toString(b.tensor(name).bytes(arena).toArray(ValueLayout.JAVA_BYTE)));
        }
        Path teOut = tmp.resolve("te-hf");
        assertEquals(0, CliRun.of("export", "--in", te.resolve("mcore").toString(), "--hf-config", te.resolve("hf").toString(), "--out", teOut.toString()).code());
        for (String layout : new String[] {"sequential", "stacked"}) {
            Path s = synth(layout, "--experts-layout", layout);
            Path sOut = tmp.resolve(layout + "-hf");
            CliRun r = CliRun.of("export", "--in", s.resolve("mcore").toString(), "--hf-config", s.resolve("hf").toString(), "--out", sOut.toString());
            assertEquals(0, r.code(), r.err());
            assertSameTensors(teOut, sOut);
        }
    }

    @Test
    void explicitDimensionsAndPattern() throws Exception {
        Path out = synth("dims", "--pattern", "E*", "--experts", "4", "--expert-size", "32", "--hidden", "128", "--vocab", "100");
        try (Checkpoint c = Checkpoints.open(out.resolve("mcore"))) {
            assertEquals(Shape.of(32, 128), c.tensor("decoder.layers.0.mlp.experts.linear_fc1.weight3").shape());
            assertEquals(Shape.of(100, 128), c.tensor("embedding.word_embeddings.weight").shape());
            assertTrue(c.contains("decoder.layers.1.self_attention.linear_qkv.weight"));
        }
        assertTrue(Files.readString(out.resolve("hf/config.json")).contains("\"n_routed_experts\": 4"));
        CliRun bad = CliRun.of("synth", "--pattern", "MXE", "--out", tmp.resolve("bad").toString());
        assertEquals(1, bad.code());
        assertTrue(bad.err().contains("layer pattern 'MXE' may only hold"), bad.err());
    }
}
