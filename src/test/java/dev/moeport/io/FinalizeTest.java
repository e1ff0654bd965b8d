package dev.moeport.io;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.moeport.cli.CliRun;
import dev.moeport.testing.Shared;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** {@code moeport finalize} completes a folder whose parts all ended but none could switch it in. */
class FinalizeTest {
    private static final Path FIXTURE = Shared.fixture("nemotron_h_tiny");

    @TempDir
    Path tmp;

    private static String[] export(Path out, String... more) {
        List<String> all = new ArrayList<>(List.of("export", "--in", FIXTURE.resolve("mcore_te").toString(), "--hf-config",
                FIXTURE.resolve("hf").toString(), "--max-shard-size", "1MB", "--no-progress", "--out", out.toString()));
        all.addAll(List.of(more));
        return all.toArray(String[]::new);
    }

    @Test
    void finalizeSwitchesInWhatTheLastPartCouldNot() throws Exception {
        Path out = tmp.resolve("out");
        assertEquals(0, CliRun.of(export(out, "--part", "1/2")).code());
        long wait = StagedPlan.folderLockWaitMillis;
        StagedPlan.folderLockWaitMillis = 500;
        CliRun last;
        // Another process holds the folder's lock when part 2 ends (on a file system without locks, every lock fails).
        try (FileChannel lock = FileChannel.open(out.resolve(OutputFolder.LOCK), StandardOpenOption.CREATE, StandardOpenOption.WRITE)) {
            StagedPlan.beforeComplete = () -> {
                try {
                    lock.lock();
                } catch (java.io.IOException e) {
                    throw new java.io.UncheckedIOException(e);
                }
            };
            last = CliRun.of(export(out, "--part", "2/2"));
        } finally {
            StagedPlan.folderLockWaitMillis = wait;
            StagedPlan.beforeComplete = () -> {};
        }
        assertEquals(1, last.code());
        assertEquals(1, last.err().lines().count(), last.err());
        assertTrue(last.err().contains("part 2/2 finished its files but cannot complete the checkpoint")
                && last.err().contains("run 'moeport finalize " + out + "'"), last.err());
        try (Stream<Path> s = Files.list(out)) {
            assertTrue(s.allMatch(p -> p.getFileName().toString().startsWith(".")), "nothing shows yet");
        }
        CliRun finalized = CliRun.of("finalize", out.toString());
        assertEquals(0, finalized.code(), finalized.err());
        Path whole = CliRun.succeeding(export(tmp.resolve("whole")));
        dev.moeport.cli.PartsTest.assertSameFiles(whole, out);
    }
}
