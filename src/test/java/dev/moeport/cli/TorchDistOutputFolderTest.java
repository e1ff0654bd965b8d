package dev.moeport.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.moeport.testing.Shared;
import dev.moeport.testing.TestCheckpoints;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Megatron-LM takes a folder holding {@code latest_checkpointed_iteration.txt} for a finished checkpoint.
 * An import to torch_dist killed (SIGKILL) at spread-out moments must therefore never leave the tracker file
 * beside an incomplete checkpoint: whenever the tracker is there, the checkpoint exports to the Hugging Face
 * fixture exactly. And an {@code --overwrite} run replaces an earlier training checkpoint whole: its
 * iteration folder goes, so no tracker can name it again.
 */
class TorchDistOutputFolderTest {
    private static final Path HF = Shared.fixture("nemotron_h_tiny").resolve("hf");

    @TempDir
    Path tmp;

    @Test
    void aKilledImportNeverLeavesATrackerBesideAnIncompleteCheckpoint() throws Exception {
        // An uninterrupted run's length (JVM start included) spreads the kill moments over a whole run.
        long started = System.nanoTime();
        Process whole = start(tmp.resolve("whole"), tmp.resolve("whole.log"));
        assertTrue(whole.waitFor(120, TimeUnit.SECONDS));
        assertEquals(0, whole.exitValue(), Files.readString(tmp.resolve("whole.log")));
        long runMillis = (System.nanoTime() - started) / 1_000_000;
        int finished = 0;
        for (int trial = 0; trial < 6; trial++) {
            Path out = tmp.resolve("out" + trial);
            Path log = tmp.resolve("log" + trial);
            Process p = start(out, log);
            p.waitFor(runMillis * (trial + 2) / 8, TimeUnit.MILLISECONDS);
            p.destroyForcibly();
            assertTrue(p.waitFor(60, TimeUnit.SECONDS));
            if (Files.exists(out.resolve("latest_checkpointed_iteration.txt"))) {
                finished++;
                TestCheckpoints.assertSameTensors(HF, CliRun.succeeding("export", "--in", out.toString(), "--hf-config", HF.toString(),
                        "--out", tmp.resolve("back" + trial).toString()));
            } else if (Files.exists(out)) {
                try (var s = Files.list(out)) {
                    assertTrue(s.noneMatch(f -> f.getFileName().toString().startsWith("iter_")),
                            "an iteration folder without its tracker: " + Files.readString(log));
                }
            }
        }
        // The kills must also hit runs in flight, or the test says nothing: at least one trial has no tracker.
        assertTrue(finished < 6, "every run finished before its kill");
        // A run into the folder a killed run left cleans it and writes the whole checkpoint.
        Path out = tmp.resolve("out0");
        CliRun again = CliRun.of("import", "--in", HF.toString(), "--out", out.toString(), "--ckpt-format", "torch_dist", "--overwrite");
        assertEquals(0, again.code(), again.err());
        TestCheckpoints.assertSameTensors(HF, CliRun.succeeding("export", "--in", out.toString(), "--hf-config", HF.toString(),
                "--out", tmp.resolve("back").toString()));
    }

    @Test
    void anOverwriteReplacesAnEarlierTrainingCheckpointWhole() throws Exception {
        Path out = tmp.resolve("out");
        CliRun.succeeding("import", "--in", HF.toString(), "--out", out.toString(), "--ckpt-format", "torch_dist", "--megatron-spec", "local");
        // What a training run leaves: iteration 100 and its tracker, and a file of the user's.
        Files.move(out.resolve("iter_0000000"), out.resolve("iter_0000100"));
        Files.writeString(out.resolve("latest_checkpointed_iteration.txt"), "100");
        Files.writeString(out.resolve("README.md"), "notes");
        CliRun refused = CliRun.of("import", "--in", HF.toString(), "--out", out.toString(), "--ckpt-format", "torch_dist");
        assertTrue(refused.code() != 0 && Files.exists(out.resolve("iter_0000100")), refused.err());

        CliRun.succeeding("import", "--in", HF.toString(), "--out", out.toString(), "--ckpt-format", "torch_dist", "--overwrite");
        try (var s = Files.list(out)) {
            assertEquals(List.of("README.md", "iter_0000000", "latest_checkpointed_iteration.txt"),
                    s.map(f -> f.getFileName().toString()).sorted().toList());
        }
        assertEquals("0", Files.readString(out.resolve("latest_checkpointed_iteration.txt")).strip());
        assertEquals("notes", Files.readString(out.resolve("README.md")));
        TestCheckpoints.assertSameTensors(HF, CliRun.succeeding("export", "--in", out.toString(), "--hf-config", HF.toString(),
                "--out", tmp.resolve("back").toString()));
    }

    /** The CLI's import to torch_dist in a child JVM, its output to {@code log}. */
    private static Process start(Path out, Path log) throws java.io.IOException {
        List<String> command = new ArrayList<>(List.of(ProcessHandle.current().info().command().orElse("java"), "-Xmx256m",
                "--add-modules", "jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED", "-cp", System.getProperty("java.class.path"),
                Main.class.getName(), "import", "--in", HF.toString(), "--out", out.toString(), "--ckpt-format", "torch_dist"));
        return new ProcessBuilder(command).redirectErrorStream(true).redirectOutput(log.toFile()).start();
    }
}
