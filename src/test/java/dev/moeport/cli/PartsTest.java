package dev.moeport.cli;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.moeport.testing.Shared;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A plan split into parts ({@code --part I/N}) written one part after another into one folder: nothing looks
 * like a checkpoint until the last part ends, which completes the folder byte for byte as one process writes it;
 * and the ways parts can be misused, each refused in one line with nothing lost.
 */
public class PartsTest {
    private static final Path FIXTURE = Shared.fixture("nemotron_h_tiny");

    @TempDir
    Path tmp;

    /** Every file under {@code dir} (hidden ones included), by relative path, with its bytes. */
    public static Map<String, byte[]> files(Path dir) throws Exception {
        Map<String, byte[]> files = new TreeMap<>();
        try (Stream<Path> walk = Files.walk(dir)) {
            for (Path p : walk.filter(Files::isRegularFile).toList()) {
                files.put(dir.relativize(p).toString(), Files.readAllBytes(p));
            }
        }
        return files;
    }

    public static void assertSameFiles(Path expected, Path actual) throws Exception {
        Map<String, byte[]> want = files(expected);
        Map<String, byte[]> got = files(actual);
        assertEquals(want.keySet(), got.keySet());
        want.forEach((name, bytes) -> assertArrayEquals(bytes, got.get(name), name));
    }

    /** The names a reader sees in {@code dir}: not hidden. */
    private static List<String> visible(Path dir) throws Exception {
        try (Stream<Path> s = Files.list(dir)) {
            return s.map(p -> p.getFileName().toString()).filter(n -> !n.startsWith(".")).sorted().toList();
        }
    }

    private static String[] args(List<String> base, String... more) {
        List<String> all = new ArrayList<>(base);
        all.addAll(List.of(more));
        return all.toArray(String[]::new);
    }

    private void partsEqualTheWholeRun(List<String> command, int parts, int... order) throws Exception {
        // Into the same folder name (torch_dist's .metadata holds the folder's path), the whole run moved aside.
        Path out = tmp.resolve("out");
        Path whole = Files.move(CliRun.succeeding(args(command, "--out", out.toString())), tmp.resolve("whole"));
        for (int i = 0; i < order.length; i++) {
            CliRun r = CliRun.of(args(command, "--out", out.toString(), "--part", order[i] + "/" + parts));
            assertEquals(0, r.code(), r.err());
            if (i < order.length - 1) {
                assertEquals(List.of(), visible(out), "nothing shows before the last part ends");
                assertTrue(r.out().contains("part " + order[i] + "/" + parts + ": wrote "), r.out());
                assertTrue(r.out().contains("the last part to end completes"), r.out());
            } else {
                assertTrue(r.out().contains("it ended last and completed"), r.out());
            }
        }
        assertSameFiles(whole, out);
    }

    @Test
    void anExportInThreePartsIsByteForByteTheWholeRun() throws Exception {
        partsEqualTheWholeRun(List.of("export", "--in", FIXTURE.resolve("mcore_te").toString(), "--hf-config", FIXTURE.resolve("hf").toString(),
                "--max-shard-size", "1MB", "--no-progress"), 3, 2, 3, 1);
    }

    @Test
    void aQuantizingExportInFourPartsIsByteForByteTheWholeRun() throws Exception {
        // nvfp4 puts a module's input_scale, weight, weight_scale and weight_scale_2 either side of shard boundaries.
        partsEqualTheWholeRun(List.of("export", "--in", FIXTURE.resolve("mcore_te").toString(), "--hf-config", FIXTURE.resolve("hf").toString(),
                "--format", "nvfp4", "--max-shard-size", "300KB", "--no-progress"), 4, 4, 1, 3, 2);
    }

    @Test
    void aTorchDistImportInThreePartsIsByteForByteTheWholeRun() throws Exception {
        partsEqualTheWholeRun(List.of("import", "--in", FIXTURE.resolve("hf").toString(), "--max-shard-size", "1MB", "--no-progress"), 3, 1, 3, 2);
    }

    @Test
    void moreFilesThanPartsIsNotNeededAPartWithNoneStillCounts() throws Exception {
        partsEqualTheWholeRun(List.of("quantize", "--in", FIXTURE.resolve("hf").toString(), "--format", "fp8", "--no-progress"), 2, 2, 1);
    }

    @Test
    void aDryRunOfAPartListsItsShardsAndHowEvenThePartsAre() {
        CliRun r = CliRun.of("export", "--in", FIXTURE.resolve("mcore_te").toString(), "--hf-config", FIXTURE.resolve("hf").toString(),
                "--max-shard-size", "1MB", "--out", tmp.resolve("x").toString(), "--dry-run", "--part", "2/3");
        assertEquals(0, r.code(), r.err());
        assertTrue(r.out().lines().anyMatch(l -> l.matches("part 2/3: \\d+ tensors, \\d+ of the \\d+ shard\\(s\\), .*the mean.*")), r.out());
        assertFalse(Files.exists(tmp.resolve("x")));
    }

    @Test
    void misusedPartsAreOneLineEachAndLoseNothing() throws Exception {
        List<String> export = List.of("export", "--in", FIXTURE.resolve("mcore_te").toString(), "--hf-config", FIXTURE.resolve("hf").toString(),
                "--max-shard-size", "1MB", "--no-progress");
        Path out = tmp.resolve("out");
        for (String bad : List.of("4/3", "0/3")) {
            CliRun r = CliRun.of(args(export, "--out", out.toString(), "--part", bad));
            assertEquals(2, r.code(), r.err());
            assertTrue(r.err().startsWith("moeport: --part " + bad + ": "), r.err());
        }
        assertFalse(Files.exists(out));

        assertEquals(0, CliRun.of(args(export, "--out", out.toString(), "--part", "1/3")).code());
        Map<String, byte[]> staged = files(out);
        // finalize before the other parts ran
        CliRun early = CliRun.of("finalize", out.toString());
        assertEquals(1, early.code());
        assertEquals(1, early.err().lines().count(), early.err());
        assertTrue(early.err().contains("files are not finished yet") && early.err().contains("(part 2/3)"), early.err());
        // another number of parts, other options
        CliRun four = CliRun.of(args(export, "--out", out.toString(), "--part", "2/4"));
        assertEquals(1, four.code());
        assertTrue(four.err().contains("holds the unfinished parts of another plan (it was split into 3 parts, this run into 4)"), four.err());
        CliRun fp8 = CliRun.of(args(export, "--out", out.toString(), "--part", "2/3", "--format", "fp8"));
        assertEquals(1, fp8.code());
        assertTrue(fp8.err().contains("another plan (the options differ"), fp8.err());
        // a whole run into the folder
        CliRun whole = CliRun.of(args(export, "--out", out.toString(), "--overwrite"));
        assertEquals(1, whole.code());
        assertTrue(whole.err().contains("holds the unfinished parts of another plan"), whole.err());
        // part 2 while another process runs part 2 (its lock held)
        Path lock = out.resolve(".moeport-staging/.moeport-part-2-of-3.lock");
        try (FileChannel held = FileChannel.open(lock, StandardOpenOption.CREATE, StandardOpenOption.WRITE)) {
            held.lock();
            CliRun twice = CliRun.of(args(export, "--out", out.toString(), "--part", "2/3"));
            assertEquals(1, twice.code());
            assertEquals(1, twice.err().lines().count(), twice.err());
            assertTrue(twice.err().contains("part 2/3 of this plan is already running"), twice.err());
        }
        Files.deleteIfExists(lock);
        Map<String, byte[]> after = files(out);
        after.keySet().removeIf(n -> n.endsWith(".lock"));
        staged.keySet().removeIf(n -> n.endsWith(".lock"));
        assertEquals(staged.keySet(), after.keySet(), "nothing lost, nothing added");

        // The plan then finishes as usual, and finalize of the finished folder says there is nothing to do.
        assertEquals(0, CliRun.of(args(export, "--out", out.toString(), "--part", "3/3")).code());
        assertEquals(0, CliRun.of(args(export, "--out", out.toString(), "--part", "2/3")).code());
        assertSameFiles(CliRun.succeeding(args(export, "--out", tmp.resolve("whole").toString())), out);
        CliRun done = CliRun.of("finalize", out.toString());
        assertEquals(1, done.code());
        assertTrue(done.err().contains("nothing to finalize"), done.err());
    }
}
