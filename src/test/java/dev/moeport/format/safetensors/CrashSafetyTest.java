package dev.moeport.format.safetensors;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.moeport.MoeportException;
import dev.moeport.tensor.DType;
import dev.moeport.tensor.Shape;
import java.io.BufferedReader;
import java.io.InputStreamReader;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** A writer killed with SIGKILL in the middle of its work leaves nothing that looks like a finished checkpoint. */
class CrashSafetyTest {
    @TempDir
    Path dir;

    /** The child: writes part of a two-shard output, says so, then waits to be killed. */
    public static void main(String[] args) throws Exception {
        ShardLayout layout = ShardLayout.plan(List.of(new ShardLayout.Spec("a", DType.U8, Shape.of(1 << 20)),
                new ShardLayout.Spec("b", DType.U8, Shape.of(1 << 20))), 1 << 20);
        SafetensorsWriter w = SafetensorsWriter.create(Path.of(args[0]), layout, false);
        w.sink("a").write(0, MemorySegment.ofArray(new byte[1 << 20]));
        System.out.println("ready");
        System.out.flush();
        Thread.sleep(60_000);
    }

    @Test
    void killedWriterLeavesOnlyHiddenPartialFiles() throws Exception {
        String java = ProcessHandle.current().info().command().orElse("java");
        Process child = new ProcessBuilder(java, "-cp", System.getProperty("java.class.path"), CrashSafetyTest.class.getName(), dir.toString())
                .redirectErrorStream(true)
                .start();
        try (BufferedReader out = new BufferedReader(new InputStreamReader(child.getInputStream()))) {
            String line;
            while ((line = out.readLine()) != null && !line.equals("ready")) {
                // skip JVM warnings
            }
            assertEquals("ready", line, "child did not get to the middle of its write");
        }
        child.destroyForcibly();
        assertTrue(child.waitFor(30, TimeUnit.SECONDS));
        try (Stream<Path> files = Files.list(dir)) {
            List<Path> left = files.toList();
            assertFalse(left.isEmpty());
            assertTrue(left.stream().allMatch(SafetensorsWriter::isPartial), "left: " + left);
        }
        assertFalse(Files.exists(dir.resolve(SafetensorsCheckpoint.INDEX_NAME)));
        MoeportException e = assertThrows(MoeportException.class, () -> SafetensorsCheckpoint.open(dir));
        assertTrue(e.getMessage().contains("no *.safetensors files"), e.getMessage());
    }
}
