package dev.moeport.io;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.moeport.cli.CliRun;
import dev.moeport.testing.Shared;
import dev.moeport.testing.TestCheckpoints;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.Random;
import java.util.stream.IntStream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Write-behind changes when pages reach the disk, never what the files hold. */
class WriteBehindTest {
    @TempDir
    Path tmp;

    /**
     * auto counts what the run reads with what it writes: an input twice the memory with a small output (an NVFP4
     * export's is a third of its input) fills the page cache as surely as a large output.
     */
    @Test
    void autoTurnsOnWhenInputAndOutputTogetherExceedMemory() {
        long memory = MemoryLimit.available();
        assertTrue(WriteBehind.Choice.AUTO.chooses(2 * memory, memory / 8));
        assertTrue(WriteBehind.Choice.AUTO.chooses(memory / 2, memory / 2 + (64L << 20)));
        assertFalse(WriteBehind.Choice.AUTO.chooses(memory / 4, memory / 4));
        assertTrue(WriteBehind.Choice.ON.chooses(0, 0));
        assertFalse(WriteBehind.Choice.OFF.chooses(2 * memory, 2 * memory));
    }

    /** Writes from several threads, out of order, with a window small enough that most ranges are waited for and dropped. */
    @Test
    void filesHoldWhatWasWritten() throws Exception {
        byte[] want = new byte[4 << 20];
        new Random(3).nextBytes(want);
        Path file = tmp.resolve("out");
        int block = 64 << 10;
        try (FileChannel channel = FileChannel.open(file, StandardOpenOption.CREATE, StandardOpenOption.WRITE);
             WriteBehind behind = WriteBehind.of(file, 256 << 10)) {
            IntStream.range(0, want.length / block).parallel().map(i -> (i * 37) % (want.length / block)).forEach(i -> {
                try {
                    channel.write(ByteBuffer.wrap(want, i * block, block), (long) i * block);
                } catch (java.io.IOException e) {
                    throw new java.io.UncheckedIOException(e);
                }
                behind.written((long) i * block, block);
            });
        }
        assertArrayEquals(want, Files.readAllBytes(file));
    }

    /** The same output with write-behind on and off, for the safetensors and torch_dist writers; the summary says which. */
    @Test
    void onAndOffWriteTheSameBytes() throws Exception {
        Path hf = Shared.fixture("qwen3_next/hf");
        for (String format : java.util.List.of("safetensors", "torch_dist")) {
            Path on = tmp.resolve(format + "-on");
            Path off = tmp.resolve(format + "-off");
            CliRun r = CliRun.of("import", "--in", hf.toString(), "--out", on.toString(), "--ckpt-format", format, "--max-shard-size", "1MB",
                    "--write-behind", "on", "--json");
            assertEquals(0, r.code(), r.err());
            assertTrue(r.out().contains("\"write_behind\" : true") || r.out().contains("\"write_behind\":true"), r.out());
            CliRun.succeeding("import", "--in", hf.toString(), "--out", off.toString(), "--ckpt-format", format, "--max-shard-size", "1MB",
                    "--write-behind", "off");
            try (var files = Files.walk(off)) {
                // .metadata names its folder (checkpoint_id), which differs
                for (Path f : files.filter(Files::isRegularFile).filter(f -> !f.endsWith(".metadata")).toList()) {
                    assertArrayEquals(Files.readAllBytes(f), Files.readAllBytes(on.resolve(off.relativize(f))), f.toString());
                }
            }
        }
        Path back = CliRun.succeeding("export", "--in", tmp.resolve("torch_dist-on").toString(), "--hf-config", hf.toString(),
                "--out", tmp.resolve("back").toString(), "--write-behind", "on");
        TestCheckpoints.assertSameTensors(hf, back);
    }

    @Test
    void anUnknownChoiceIsAUsageError() {
        CliRun r = CliRun.of("import", "--in", Shared.fixture("qwen3_next/hf").toString(), "--out", tmp.resolve("x").toString(),
                "--write-behind", "sometimes");
        assertEquals(2, r.code(), r.err());
        assertTrue(r.err().contains("--write-behind must be auto, on or off"), r.err());
    }

    /** The memory a run may use: MemAvailable, or the room under the tightest cgroup limit on the way to the root. */
    @Test
    void memoryLimitReadsMeminfoAndTheCgroupsLimits() throws Exception {
        Path proc = Files.createDirectories(tmp.resolve("proc/self"));
        Path cgroups = Files.createDirectories(tmp.resolve("cgroup"));
        Files.writeString(tmp.resolve("proc/meminfo"), "MemTotal:       32000000 kB\nMemAvailable:   20000000 kB\n");
        Files.writeString(proc.resolve("cgroup"), "0::/jobs/job1\n");
        assertEquals(20000000L * 1024, MemoryLimit.available(tmp.resolve("proc"), cgroups), "no cgroup files: MemAvailable");
        Path job = Files.createDirectories(cgroups.resolve("jobs/job1"));
        Files.writeString(job.resolve("memory.max"), "max\n");
        Files.writeString(job.resolve("memory.current"), "1000\n");
        Files.writeString(cgroups.resolve("jobs/memory.max"), (4L << 30) + "\n");
        Files.writeString(cgroups.resolve("jobs/memory.current"), (1L << 30) + "\n");
        assertEquals(3L << 30, MemoryLimit.available(tmp.resolve("proc"), cgroups), "the parent's limit less its use");
        Files.writeString(proc.resolve("cgroup"), "12:cpu,cpuacct:/x\n4:memory:/slurm/job7\n");
        Path v1 = Files.createDirectories(cgroups.resolve("memory/slurm/job7"));
        Files.writeString(v1.resolve("memory.limit_in_bytes"), (8L << 30) + "\n");
        Files.writeString(v1.resolve("memory.usage_in_bytes"), (6L << 30) + "\n");
        assertEquals(2L << 30, MemoryLimit.available(tmp.resolve("proc"), cgroups), "cgroup v1");
    }
}
