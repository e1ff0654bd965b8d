package dev.moeport.io;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.moeport.MoeportException;
import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStreamReader;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * An output folder replaced by a run that is killed (SIGKILL, SIGTERM) at every step of its switch comes
 * back, after the next run's recovery, as exactly the earlier checkpoint or exactly the new one.
 */
class OutputFolderTest {
    @TempDir
    Path tmp;

    /** The earlier checkpoint: two shards and an index, a config, and a file that is not the checkpoint's. */
    private static final Map<String, String> EARLIER = Map.of("a.safetensors", "old a", "b.safetensors", "old b",
            "index.json", "old index", "config.json", "old config", "iter_0000000/.metadata", "old metadata");
    private static final String KEPT = "README.md";
    /** The new one: one shard, a config, a torch_dist-like folder, a new file. */
    private static final Map<String, String> NEW = Map.of("a.safetensors", "new a", "config.json", "new config",
            "iter_0000000/.metadata", "new metadata", "iter_0000000/__0_0.distcp", "new data", "tokenizer.json", "new tokenizer");

    /** The earlier checkpoint's index and the new one's tracker-like file: the last to go in, the first to leave. */
    private static boolean marksComplete(String name) {
        return name.equals("index.json") || name.equals("tokenizer.json");
    }

    private static boolean checkpointFile(String name) {
        return name.endsWith(".safetensors") || name.equals("index.json") || name.startsWith("iter_");
    }

    /**
     * The child: replaces the checkpoint in {@code args[0]}; at stop point {@code args[1]} (0: staged, before
     * the switch; k: after the k-th step of the switch) it says "stopped" and waits {@code args[2]} ms to be
     * signalled (a SIGTERM during the switch waits for the switch, so that wait is kept short).
     */
    public static void main(String[] args) throws Exception {
        Path out = Path.of(args[0]);
        int stopAt = Integer.parseInt(args[1]);
        long wait = args.length > 2 ? Long.parseLong(args[2]) : 0;
        AtomicInteger step = new AtomicInteger();
        Runnable stop = () -> {
            System.out.println("stopped");
            System.out.flush();
            try {
                Thread.sleep(wait);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        };
        OutputFolder.afterSwitchStep = () -> {
            if (step.incrementAndGet() == stopAt) {
                stop.run();
            }
        };
        OutputFolder folder = OutputFolder.open(out, true, List.of(), OutputFolderTest::checkpointFile, OutputFolderTest::marksComplete, false);
        // As Conversion does: a signal before the switch removes the staged files; one during the switch waits for it.
        Runtime.getRuntime().addShutdownHook(new Thread(() -> folder.abandon(() -> {})));
        write(folder.staging(), NEW);
        if (stopAt == 0) {
            stop.run();
        }
        folder.commit();
        folder.close();
        System.out.println("done");
    }

    private static void write(Path dir, Map<String, String> files) throws IOException {
        for (Map.Entry<String, String> e : files.entrySet()) {
            Path p = dir.resolve(e.getKey());
            Files.createDirectories(p.getParent());
            Files.writeString(p, e.getValue());
        }
    }

    /** Every file under {@code dir}, hidden ones included, with its text. */
    static Map<String, String> contents(Path dir) throws IOException {
        Map<String, String> all = new TreeMap<>();
        try (Stream<Path> s = Files.walk(dir)) {
            for (Path p : s.filter(Files::isRegularFile).toList()) {
                all.put(dir.relativize(p).toString(), Files.readString(p));
            }
        }
        return all;
    }

    private static Map<String, String> with(Map<String, String> checkpoint) {
        Map<String, String> m = new TreeMap<>(checkpoint);
        m.put(KEPT, "kept");
        return m;
    }

    private Process child(Path out, int stopAt, long wait) throws IOException {
        String java = ProcessHandle.current().info().command().orElse("java");
        return new ProcessBuilder(java, "-cp", System.getProperty("java.class.path"), OutputFolderTest.class.getName(), out.toString(),
                Integer.toString(stopAt), Long.toString(wait)).redirectErrorStream(true).start();
    }

    private static String awaitLine(Process p) throws IOException {
        BufferedReader r = new BufferedReader(new InputStreamReader(p.getInputStream(), StandardCharsets.UTF_8));
        String line;
        while ((line = r.readLine()) != null && !line.equals("stopped") && !line.equals("done")) {
            // JVM warnings
        }
        return line;
    }

    @Test
    void aSignalAtAnyStepOfTheSwitchLeavesExactlyTheEarlierOrTheNewCheckpoint() throws Exception {
        // Steps of this switch: the journal, 5 earlier entries aside, 4 new ones in, the aside folder removed.
        int steps = 11;
        for (boolean kill : new boolean[] {true, false}) {
            // SIGKILL at every step; SIGTERM (which waits for a switch under way) before, at the start, middle and end.
            for (int stopAt : kill ? java.util.stream.IntStream.rangeClosed(0, steps).toArray() : new int[] {0, 1, 6, steps}) {
                Path out = tmp.resolve((kill ? "kill-" : "term-") + stopAt);
                write(out, EARLIER);
                Files.writeString(out.resolve(KEPT), "kept");
                Process p = child(out, stopAt, kill || stopAt == 0 ? 60_000 : 1000);
                assertEquals("stopped", awaitLine(p), "child did not reach stop point " + stopAt);
                if (kill) {
                    p.destroyForcibly();
                } else {
                    p.destroy();
                }
                assertTrue(p.waitFor(30, TimeUnit.SECONDS));
                // Even before recovery, a marker never stands beside the other checkpoint's files.
                Map<String, String> before = contents(out);
                if (before.containsKey("index.json")) {
                    assertEquals("old a", before.get("a.safetensors"), "stop point " + stopAt + ": " + before);
                    assertEquals("old b", before.get("b.safetensors"), "stop point " + stopAt + ": " + before);
                }
                if (before.containsKey("tokenizer.json")) {
                    assertEquals(with(NEW), before.entrySet().stream().filter(e -> !e.getKey().startsWith("."))
                            .collect(java.util.stream.Collectors.toMap(Map.Entry::getKey, Map.Entry::getValue, (x, y) -> x, TreeMap::new)),
                            "stop point " + stopAt);
                }
                assertTrue(OutputFolder.recover(out));
                Map<String, String> left = contents(out);
                String at = (kill ? "SIGKILL" : "SIGTERM") + " at step " + stopAt + ": " + left;
                // Before the journal, the earlier checkpoint stays; once it is written, the switch completes.
                assertEquals(stopAt == 0 ? with(EARLIER) : with(NEW), left, at);
            }
        }
    }

    @Test
    void leftoversOfADeadRunAreCleanedAndTheRerunProceeds() throws Exception {
        Path out = tmp.resolve("out");
        Files.createDirectories(out.resolve(OutputFolder.STAGING));
        Files.writeString(out.resolve(OutputFolder.STAGING).resolve("model.safetensors"), "half");
        Files.writeString(out.resolve(".model-00001-of-00002.safetensors.partial"), "half");
        Files.writeString(out.resolve(OutputFolder.LOCK), "");
        java.io.StringWriter warnings = new java.io.StringWriter();
        dev.moeport.Warnings.to(new java.io.PrintWriter(warnings, true));
        try (OutputFolder folder = OutputFolder.open(out, false, List.of(), OutputFolderTest::checkpointFile, OutputFolderTest::marksComplete, false)) {
            write(folder.staging(), NEW);
            folder.commit();
        } finally {
            dev.moeport.Warnings.to(new java.io.PrintWriter(System.err, true));
        }
        assertTrue(warnings.toString().contains("removed the leftovers of an interrupted run"), warnings.toString());
        assertEquals(new TreeMap<>(NEW), contents(out));
    }

    @Test
    void aFolderAnotherRunHoldsIsRefusedAndLeftAlone() throws Exception {
        Path out = tmp.resolve("out");
        try (OutputFolder first = OutputFolder.open(out, false, List.of(), OutputFolderTest::checkpointFile, OutputFolderTest::marksComplete, false)) {
            write(first.staging(), NEW);
            // The lock is per process: a second run is a second JVM.
            Process second = new ProcessBuilder(ProcessHandle.current().info().command().orElse("java"), "-cp",
                    System.getProperty("java.class.path"), OutputFolderTest.class.getName(), out.toString(), "-1")
                    .redirectErrorStream(true).start();
            String output = new String(second.getInputStream().readAllBytes(), StandardCharsets.UTF_8);
            assertTrue(second.waitFor(30, TimeUnit.SECONDS));
            assertTrue(output.contains("another moeport run is writing to this folder"), output);
            assertEquals(new TreeMap<>(NEW), new TreeMap<>(contents(first.staging())), "the staged files are untouched");
        }
    }

    @Test
    void anInterruptBeforeTheSwitchRemovesOnlyWhatWasStaged() throws Exception {
        Path out = tmp.resolve("out");
        write(out, EARLIER);
        OutputFolder folder = OutputFolder.open(out, true, List.of(), OutputFolderTest::checkpointFile, OutputFolderTest::marksComplete, false);
        write(folder.staging(), NEW);
        assertTrue(folder.abandon(() -> {}));
        MoeportException e = assertThrows(MoeportException.class, folder::commit);
        assertTrue(e.getMessage().contains("interrupted"), e.getMessage());
        folder.close();
        assertEquals(new TreeMap<>(EARLIER), contents(out));
        // After a commit, the hook has nothing to remove.
        try (OutputFolder again = OutputFolder.open(out, true, List.of(), OutputFolderTest::checkpointFile, OutputFolderTest::marksComplete, false)) {
            write(again.staging(), NEW);
            again.commit();
            assertFalse(again.abandon(() -> {}));
        }
        assertEquals(new TreeMap<>(NEW), contents(out));
    }

    @Test
    void aReaderFindsTheNewCheckpointWhereARunDiedDuringItsSwitch() throws Exception {
        Path fixture = dev.moeport.testing.Shared.fixture("nemotron_h_tiny");
        Path out = tmp.resolve("out");
        copy(fixture.resolve("hf"), out);
        OutputFolder folder = dev.moeport.convert.HfOutputFolder.open(out, true, List.of(), false);
        copy(fixture.resolve("mcore_seq"), folder.staging());
        // The run dies after the journal, the earlier index and its first shard went aside: three shards are left in place.
        AtomicInteger step = new AtomicInteger();
        OutputFolder.afterSwitchStep = () -> {
            if (step.incrementAndGet() == 3) {
                throw new IllegalStateException("died");
            }
        };
        try {
            assertThrows(IllegalStateException.class, folder::commit);
        } finally {
            OutputFolder.afterSwitchStep = () -> {};
            folder.close();
        }
        assertFalse(Files.exists(out.resolve("model.safetensors.index.json")));
        // Reading it (Checkpoints.open) completes the switch first.
        dev.moeport.testing.TestCheckpoints.assertSameTensors(fixture.resolve("mcore_seq"), out);
        try (Stream<Path> s = Files.list(out)) {
            List<String> names = s.map(p -> p.getFileName().toString()).toList();
            assertTrue(names.stream().noneMatch(n -> n.startsWith("model-") || n.startsWith(".")), names.toString());
        }
        assertTrue(Files.exists(out.resolve("config.json")), "files that are not the checkpoint's stay");
    }

    private static void copy(Path from, Path to) throws IOException {
        Files.createDirectories(to);
        try (Stream<Path> s = Files.list(from)) {
            for (Path p : s.toList()) {
                Files.copy(p, to.resolve(p.getFileName().toString()));
            }
        }
    }
}
