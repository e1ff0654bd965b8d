package dev.moeport.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.nio.file.attribute.FileTime;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A run killed with SIGKILL at several moments (before any shard is finished, after some, after most; once with
 * SIGTERM, as Slurm's time limit does, which removes its partial files), then
 * resumed with {@code --resume}, ends byte for byte as the uninterrupted run; the shards it reuses are checked
 * (one damaged on purpose is redone), and a changed input or option is refused in one line.
 */
class ResumeTest {
    @TempDir
    static Path shared;

    @TempDir
    Path tmp;

    private static Path synth;
    private static List<String> export;
    /** The uninterrupted run. */
    private static Path whole;

    @BeforeAll
    static void synthesize() {
        synth = shared.resolve("synth");
        CliRun.succeeding("synth", "--preset", "small", "--vocab", "4096", "--out", synth.toString(), "--no-progress");
        export = List.of("export", "--in", synth.resolve("mcore").toString(), "--hf-config", synth.resolve("hf").toString(),
                "--format", "nvfp4", "--max-shard-size", "3MB", "--no-progress", "--threads", "2");
        whole = CliRun.succeeding(args(shared.resolve("whole")));
    }

    private static String[] args(Path out, String... more) {
        List<String> all = new ArrayList<>(export);
        all.addAll(List.of("--out", out.toString()));
        all.addAll(List.of(more));
        return all.toArray(String[]::new);
    }

    /**
     * Starts the export in a child JVM and kills it (SIGKILL) once its manifest records {@code finished} shards;
     * returns false when the run ended before the kill reached it (then it must have finished whole).
     */
    private boolean killAfter(Path out, int finished) throws Exception {
        return killAfter(out, finished, true);
    }

    /** As above, with SIGTERM (Slurm's time limit, Ctrl-C) unless {@code forcibly}. */
    private boolean killAfter(Path out, int finished, boolean forcibly) throws Exception {
        List<String> command = new ArrayList<>(List.of(ProcessHandle.current().info().command().orElse("java"), "-Xmx256m",
                "--add-modules", "jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED", "-cp", System.getProperty("java.class.path"),
                Main.class.getName()));
        command.addAll(List.of(args(out)));
        Process p = new ProcessBuilder(command).redirectErrorStream(true).redirectOutput(tmp.resolve("child.log").toFile()).start();
        Path staging = out.resolve(".moeport-staging");
        Path manifest = staging.resolve(".moeport-part-1-of-1.manifest");
        long deadline = System.nanoTime() + TimeUnit.SECONDS.toNanos(120);
        while (p.isAlive() && System.nanoTime() < deadline) {
            boolean reached = finished == 0 ? Files.isDirectory(staging) && Files.exists(staging.resolve(".moeport-ready"))
                    : Files.exists(manifest) && Files.readString(manifest).lines().count() >= finished;
            if (reached) {
                break;
            }
            Thread.sleep(1);
        }
        if (forcibly) {
            p.destroyForcibly();
        } else {
            p.destroy();
        }
        assertTrue(p.waitFor(60, TimeUnit.SECONDS));
        if (!Files.exists(staging)) {
            // Killed after the switch, before the lock file's removal: a lock no process holds, which the next run takes.
            Files.deleteIfExists(out.resolve(".moeport.lock"));
            PartsTest.assertSameFiles(whole, out);
            return false;
        }
        try (var s = Files.list(out)) {
            assertTrue(s.allMatch(f -> f.getFileName().toString().startsWith(".")), "killed mid-run, nothing may show: " + Files.readString(tmp.resolve("child.log")));
        }
        return true;
    }

    private static int reused(String out) {
        Matcher m = Pattern.compile("reused (\\d+) of (\\d+) shard").matcher(out);
        return m.find() ? Integer.parseInt(m.group(1)) : 0;
    }

    @Test
    void aRunKilledAtAnyMomentAndResumedIsTheUninterruptedRun() throws Exception {
        int shards;
        try (var s = Files.list(whole)) {
            shards = (int) s.filter(f -> f.toString().endsWith(".safetensors")).count();
        }
        assertTrue(shards >= 10, "enough shards to kill between: " + shards);
        int reusedSome = 0;
        for (int finished : new int[] {0, 2, shards / 2, shards - 2}) {
            Path out = tmp.resolve("out" + finished);
            // Halfway, SIGTERM: the run removes its partial files and keeps the finished ones.
            boolean term = finished == shards / 2;
            if (!killAfter(out, finished, !term)) {
                continue; // the last shards were written before the kill landed: a whole, equal run
            }
            if (term) {
                try (var staged = Files.list(out.resolve(".moeport-staging"))) {
                    List<String> names = staged.map(f -> f.getFileName().toString()).toList();
                    assertTrue(names.stream().noneMatch(n -> n.endsWith(".partial")), names.toString());
                    assertTrue(names.stream().filter(n -> n.endsWith(".safetensors")).count() >= finished, names.toString());
                }
            }
            CliRun resumed = CliRun.of(args(out, "--resume"));
            assertEquals(0, resumed.code(), resumed.err());
            assertTrue(reused(resumed.out()) >= finished, finished + ": " + resumed.out());
            reusedSome += reused(resumed.out()) > 0 ? 1 : 0;
            PartsTest.assertSameFiles(whole, out);
        }
        assertTrue(reusedSome >= 2, "the resumed runs reused finished shards");
    }

    @Test
    void aDamagedShardIsRedoneAndChangedInputsOrOptionsAreRefused() throws Exception {
        Path out = tmp.resolve("out");
        assertTrue(killAfter(out, 4), "the run ended before its kill after 4 shards");
        Path staging = out.resolve(".moeport-staging");
        List<String> recorded = Files.readAllLines(staging.resolve(".moeport-part-1-of-1.manifest"));
        // Options: another dtype for the unquantized weights
        CliRun otherOptions = CliRun.of(args(out, "--resume", "--dtype", "f16"));
        assertEquals(1, otherOptions.code());
        assertEquals(1, otherOptions.err().lines().count(), otherOptions.err());
        assertTrue(otherOptions.err().contains("--resume: cannot reuse the interrupted run's files: the options differ"), otherOptions.err());
        // Inputs: a shard touched since
        Path input;
        try (var s = Files.list(synth.resolve("mcore"))) {
            input = s.filter(f -> f.toString().endsWith(".safetensors")).sorted().findFirst().orElseThrow();
        }
        FileTime before = Files.getLastModifiedTime(input);
        Files.setLastModifiedTime(input, FileTime.fromMillis(before.toMillis() + 60_000));
        CliRun touched = CliRun.of(args(out, "--resume"));
        assertEquals(1, touched.code());
        assertTrue(touched.err().contains("the input " + input + " changed since"), touched.err());
        Files.setLastModifiedTime(input, before);
        // One finished shard damaged (one byte): checked, not reused, written again.
        Path damaged = staging.resolve(recorded.getFirst().split("\t")[0]);
        try (FileChannel c = FileChannel.open(damaged, StandardOpenOption.WRITE, StandardOpenOption.READ)) {
            java.nio.ByteBuffer b = java.nio.ByteBuffer.allocate(1);
            c.read(b, c.size() - 1);
            b.put(0, (byte) (b.get(0) ^ 1)).rewind();
            c.write(b, c.size() - 1);
        }
        CliRun resumed = CliRun.of(args(out, "--resume"));
        assertEquals(0, resumed.code(), resumed.err());
        int manifestLines = recorded.size();
        assertEquals(manifestLines - 1, reused(resumed.out()), resumed.out());
        PartsTest.assertSameFiles(whole, out);
    }
}
