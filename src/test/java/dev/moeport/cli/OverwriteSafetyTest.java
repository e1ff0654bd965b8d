package dev.moeport.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.moeport.io.OutputFolder;
import dev.moeport.testing.Shared;
import dev.moeport.testing.TestCheckpoints;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code export --overwrite} in a child JVM, killed (SIGKILL, SIGTERM) at spread-out moments or out of disk
 * space: afterwards (and after the next run's recovery) the folder holds byte for byte the earlier checkpoint
 * or the new one, as uninterrupted runs wrote them.
 */
class OverwriteSafetyTest {
    private static final Path FIXTURE = Shared.fixture("nemotron_h_tiny");

    @TempDir
    Path tmp;

    private static List<String> command(String... args) {
        List<String> c = new ArrayList<>(List.of(ProcessHandle.current().info().command().orElse("java"), "-Xmx256m",
                "--add-modules", "jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED", "-cp", System.getProperty("java.class.path"),
                Main.class.getName()));
        c.addAll(Arrays.asList(args));
        return c;
    }

    /** The earlier checkpoint: 4 shards and an index. */
    private static String[] earlier(Path hf, Path out) {
        return new String[] {"export", "--in", FIXTURE.resolve("mcore_seq").toString(), "--hf-config", hf.toString(), "--out", out.toString(),
            "--max-shard-size", "1MB", "--overwrite"};
    }

    /** The new one: one model.safetensors, another source. */
    private static String[] replacing(Path hf, Path out) {
        return new String[] {"export", "--in", FIXTURE.resolve("mcore_te").toString(), "--hf-config", hf.toString(), "--out", out.toString(),
            "--overwrite"};
    }

    /** A child JVM running the CLI; its output goes to a log file (destroying a process closes its pipes). */
    private record Child(Process process, Path log) {
        String finish() throws Exception {
            assertTrue(process.waitFor(120, TimeUnit.SECONDS));
            return Files.readString(log);
        }

        int code() throws Exception {
            String output = finish();
            assertTrue(process.exitValue() == 0 || output.contains("moeport: error"), output);
            return process.exitValue();
        }
    }

    /** Starts the CLI in a child JVM under bash, with {@code prefix} before exec (a ulimit). */
    private Child start(String prefix, String... args) throws IOException {
        StringBuilder line = new StringBuilder(prefix + " exec");
        for (String c : command(args)) {
            line.append(" '").append(c.replace("'", "'\\''")).append('\'');
        }
        Path log = Files.createTempFile(tmp, "log", ".txt");
        return new Child(new ProcessBuilder("bash", "-c", line.toString()).redirectErrorStream(true).redirectOutput(log.toFile()).start(), log);
    }

    /** Every file under {@code dir} (hidden ones too) and its bytes, as text of their hashes. */
    private static Map<String, Integer> contents(Path dir) throws IOException {
        Map<String, Integer> all = new TreeMap<>();
        try (Stream<Path> s = Files.walk(dir)) {
            for (Path p : s.filter(Files::isRegularFile).toList()) {
                all.put(dir.relativize(p).toString(), Arrays.hashCode(Files.readAllBytes(p)));
            }
        }
        return all;
    }

    private static void copyTree(Path from, Path to) throws IOException {
        try (Stream<Path> s = Files.walk(from)) {
            for (Path p : s.toList()) {
                Files.copy(p, to.resolve(from.relativize(p).toString()));
            }
        }
    }

    /** A model folder with a tokenizer big enough that copying it can run out of space. */
    private Path modelFolder() throws IOException {
        Path hf = Files.createDirectories(tmp.resolve("hf"));
        Files.copy(FIXTURE.resolve("hf/config.json"), hf.resolve("config.json"));
        byte[] tokenizer = new byte[8 << 20];
        Arrays.fill(tokenizer, (byte) 'x');
        Files.write(hf.resolve("tokenizer.json"), tokenizer);
        return hf;
    }

    @Test
    void aSignalAtAnyMomentLeavesExactlyTheEarlierOrTheNewCheckpoint() throws Exception {
        Path hf = modelFolder();
        Path earlier = tmp.resolve("earlier");
        assertEquals(0, start("", earlier(hf, earlier)).code());
        Map<String, Integer> old = contents(earlier);
        Path reference = tmp.resolve("reference");
        long started = System.nanoTime();
        assertEquals(0, start("", replacing(hf, reference)).code());
        long runMillis = (System.nanoTime() - started) / 1_000_000;
        Map<String, Integer> fresh = contents(reference);
        TestCheckpoints.assertSameTensors(FIXTURE.resolve("hf"), reference);
        int sawOld = 0;
        int sawNew = 0;
        int trials = 8;
        for (int trial = 0; trial < trials; trial++) {
            Path out = tmp.resolve("out" + trial);
            copyTree(earlier, out);
            Child child = start("", replacing(hf, out));
            Process p = child.process();
            // Spread over the run (JVM start, planning, writing, the switch) and past its end.
            Thread.sleep(runMillis * trial / (trials - 2));
            if (trial % 2 == 0) {
                p.destroyForcibly();
            } else {
                p.destroy();
            }
            String output = child.finish();
            assertTrue(OutputFolder.recover(out), output);
            Map<String, Integer> left = contents(out);
            assertTrue(left.equals(old) || left.equals(fresh), "trial " + trial + ": " + left.keySet() + "\n" + output);
            if (left.equals(old)) {
                sawOld++;
            } else {
                sawNew++;
            }
        }
        System.out.println("signals: " + sawOld + " left the earlier checkpoint, " + sawNew + " the new one");
    }

    @Test
    void aFullDiskWhileCopyingTheTokenizerLeavesTheEarlierCheckpoint() throws Exception {
        Path hf = modelFolder();
        Path out = tmp.resolve("out");
        assertEquals(0, start("", earlier(hf, out)).code());
        Map<String, Integer> old = contents(out);
        // No file over 7 MiB: the 6 MB shard is written, the 8 MiB tokenizer is not.
        Child p = start("ulimit -f 7168;", replacing(hf, out));
        String output = p.finish();
        assertEquals(1, p.process().exitValue(), output);
        assertTrue(output.contains("tokenizer.json"), output);
        assertEquals(old, contents(out));
    }

    @Test
    void afterSigkillAPlainRerunCleansTheLeftoversAndProceeds() throws Exception {
        Path hf = modelFolder();
        for (int trial = 0; ; trial++) {
            Path out = tmp.resolve("fresh" + trial);
            Process p = start("", replacing(hf, out)).process();
            // Killed once its staging folder holds a file: before the switch, most of the time.
            Path staging = out.resolve(".moeport-staging");
            while (p.isAlive() && !(Files.isDirectory(staging) && hasAny(staging))) {
                Thread.sleep(5);
            }
            p.destroyForcibly();
            p.waitFor();
            if (Files.exists(out.resolve("model.safetensors")) && trial < 5) {
                continue; // the run finished first
            }
            CliRun rerun = CliRun.of("export", "--in", FIXTURE.resolve("mcore_te").toString(), "--hf-config", hf.toString(), "--out", out.toString());
            assertEquals(0, rerun.code(), rerun.err());
            assertTrue(rerun.err().contains("removed the leftovers of an interrupted run"), rerun.err());
            TestCheckpoints.assertSameTensors(FIXTURE.resolve("hf"), out);
            try (Stream<Path> s = Files.list(out)) {
                assertTrue(s.noneMatch(f -> f.getFileName().toString().startsWith(".")), "no hidden leftovers");
            }
            return;
        }
    }

    @Test
    void anOverwriteReplacesACheckpointOfTheOtherFormatWhole() throws Exception {
        Path out = tmp.resolve("out");
        String hf = FIXTURE.resolve("hf").toString();
        CliRun.succeeding("import", "--in", hf, "--out", out.toString(), "--ckpt-format", "torch_dist");
        assertTrue(Files.exists(out.resolve("latest_checkpointed_iteration.txt")));
        CliRun.succeeding("import", "--in", hf, "--out", out.toString(), "--ckpt-format", "safetensors", "--overwrite");
        try (Stream<Path> s = Files.list(out)) {
            List<String> names = s.map(f -> f.getFileName().toString()).toList();
            assertTrue(names.stream().noneMatch(n -> n.startsWith("iter_") || n.startsWith("latest_") || n.startsWith(".")), names.toString());
            assertTrue(names.stream().anyMatch(n -> n.endsWith(".safetensors")), names.toString());
        }
        CliRun.succeeding("import", "--in", hf, "--out", out.toString(), "--ckpt-format", "torch_dist", "--overwrite");
        try (Stream<Path> s = Files.list(out)) {
            List<String> names = s.map(f -> f.getFileName().toString()).toList();
            assertTrue(names.stream().noneMatch(n -> n.endsWith(".safetensors") || n.endsWith(".index.json") || n.startsWith(".")), names.toString());
        }
        assertEquals("0", Files.readString(out.resolve("latest_checkpointed_iteration.txt")).strip());
    }

    private static boolean hasAny(Path dir) throws IOException {
        try (Stream<Path> s = Files.list(dir)) {
            return s.findAny().isPresent();
        } catch (java.nio.file.NoSuchFileException e) {
            return false;
        }
    }
}
