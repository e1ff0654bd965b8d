package dev.moeport.io;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import dev.moeport.cli.CliRun;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.List;
import java.util.Random;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Input read for the last time leaves the page cache, where the run drops behind, and only that input. */
class DropBehindTest {
    @TempDir
    Path tmp;

    private static final long MB = 1 << 20;
    private static final int PAGE = PageCache.PAGE_SIZE;

    /**
     * A mapping that starts mid-file, as a safetensors file's data does after its header: dropping a slice of it drops the
     * file's pages under that slice, not those at the slice's offset from the file's start. The range ends on 2 MB
     * boundaries, which no folio of the page cache crosses, so that its neighbours' pages stay whole.
     */
    @Test
    void dropsThePagesUnderASliceOfAMappingThatStartsMidFile() throws Throwable {
        Path file = fileOf(8 * MB);
        long position = 3 * PAGE + 17;
        try (Arena arena = Arena.ofShared(); FileChannel channel = FileChannel.open(file, StandardOpenOption.READ)) {
            MemorySegment data = channel.map(FileChannel.MapMode.READ_ONLY, position, 8 * MB - position, arena);
            DropBehind.track(data, file, position, arena);
            touch(data);
            assumeTrue(resident(file, 0, 8 * MB) == 8 * MB / PAGE, "this file system does not keep the pages read (or native calls are off)");
            NativeIO.advise(data, NativeIO.Advice.DONTNEED);
            DropBehind.drop(data.asSlice(2 * MB - position - 100, 4 * MB + 200));
            assertEquals(0, resident(file, 2 * MB, 4 * MB), "pages of the dropped range still cached");
            assertEquals(2 * MB / PAGE, resident(file, 0, 2 * MB), "pages before it");
            assertEquals(2 * MB / PAGE, resident(file, 6 * MB, 2 * MB), "pages after it");
        }
    }

    /**
     * Reading through a slice of a mapping that starts far into its file reads the file's pages under the slice, all of
     * them (the reads are many times smaller than the slice), and none before the mapping; a slice no longer wanted is
     * not read.
     */
    @Test
    void readsThePagesUnderASliceOfAMappingThatStartsFarIntoItsFile() throws Throwable {
        Path file = fileOf(24 * MB);
        long position = 12 * MB + 3 * PAGE + 17;
        dropCached(file);
        assumeTrue(resident(file, 0, 24 * MB) < MB / PAGE, "this file system keeps its files in memory (or native calls are off)");
        try (Arena arena = Arena.ofShared(); FileChannel channel = FileChannel.open(file, StandardOpenOption.READ)) {
            MemorySegment data = channel.map(FileChannel.MapMode.READ_ONLY, position, 24 * MB - position, arena);
            DropBehind.track(data, file, position, arena);
            MemorySegment scratch = arena.allocate(16 * PAGE, PAGE);
            assertTrue(DropBehind.readThrough(data.asSlice(14 * MB - position, 2 * MB), scratch, () -> false));
            assertEquals(0, resident(file, 14 * MB, 2 * MB), "pages under a slice no longer wanted");
            assertTrue(DropBehind.readThrough(data.asSlice(18 * MB - position, 2 * MB), scratch, () -> true));
            assertEquals(2 * MB / PAGE, resident(file, 18 * MB, 2 * MB), "pages under the slice");
            assertEquals(0, resident(file, 0, 12 * MB), "pages before the mapping");
        }
    }

    /** Reading through bytes of no tracked mapping (the heap, a mapping not tracked) reads nothing and says so. */
    @Test
    void readsNothingThroughWhatItDoesNotTrack() throws Throwable {
        try (Arena arena = Arena.ofShared()) {
            MemorySegment scratch = arena.allocate(16 * PAGE, PAGE);
            assertFalse(DropBehind.readThrough(MemorySegment.ofArray(new byte[PAGE * 4]), scratch, () -> true));
            Path file = fileOf(4 * MB);
            dropCached(file);
            try (FileChannel channel = FileChannel.open(file, StandardOpenOption.READ)) {
                MemorySegment untracked = channel.map(FileChannel.MapMode.READ_ONLY, 0, 4 * MB, arena);
                assertFalse(DropBehind.readThrough(untracked, scratch, () -> true));
            }
        }
    }

    /** Bytes of no tracked mapping (the heap, a mapping not tracked, one whose arena closed) are left as they are. */
    @Test
    void leavesWhatItDoesNotTrack() throws Throwable {
        DropBehind.drop(MemorySegment.ofArray(new byte[PAGE * 4]));
        Path file = fileOf(4 * MB);
        try (Arena arena = Arena.ofShared(); FileChannel channel = FileChannel.open(file, StandardOpenOption.READ)) {
            try (Arena closed = Arena.ofShared()) {
                DropBehind.track(channel.map(FileChannel.MapMode.READ_ONLY, 0, 4 * MB, closed), file, 0, closed);
            }
            MemorySegment untracked = channel.map(FileChannel.MapMode.READ_ONLY, 0, 4 * MB, arena);
            touch(untracked);
            assumeTrue(resident(file, 0, 4 * MB) == 4 * MB / PAGE, "this file system does not keep the pages read");
            NativeIO.advise(untracked, NativeIO.Advice.DONTNEED);
            DropBehind.drop(untracked);
            assertEquals(4 * MB / PAGE, resident(file, 0, 4 * MB), "pages of an untracked mapping");
        }
    }

    /**
     * An NVFP4 export reads each quantized weight twice (its amax, then the quantizing pass). Dropping behind, it reads
     * its input from the disk once, and leaves none of it cached; without, it leaves it cached. Its experts (4 MB) are
     * large enough for the read-ahead to read them through ({@code ReadAhead}), whose reads the kernel extends.
     */
    @Test
    void anExportThatDropsBehindReadsItsInputOnceAndLeavesItUncached() throws Throwable {
        Path synth = CliRun.succeeding("synth", "--preset", "tiny", "--hidden", "512", "--experts", "8", "--expert-size", "4096", "--vocab", "8192",
                "--out", tmp.resolve("synth").toString(), "--fsync", "--no-progress");
        List<Path> inputs;
        try (Stream<Path> files = Files.list(synth.resolve("mcore"))) {
            inputs = files.filter(f -> f.toString().endsWith(".safetensors")).toList();
        }
        long inputBytes = 0;
        for (Path f : inputs) {
            inputBytes += Files.size(f);
        }
        for (String writeBehind : List.of("on", "off")) {
            for (Path f : inputs) {
                dropCached(f);
            }
            assumeTrue(residentBytes(inputs) < inputBytes / 10, "this file system keeps the input in memory");
            long before = readFromDisk();
            // (not CliRun.succeeding, whose check of the output reads it from the disk)
            CliRun export = CliRun.of("export", "--in", synth.resolve("mcore").toString(), "--hf-config", synth.resolve("hf").toString(),
                    "--out", tmp.resolve("out-" + writeBehind).toString(), "--format", "nvfp4", "--write-behind", writeBehind, "--no-progress");
            long read = readFromDisk() - before;
            assertEquals(0, export.code(), export.err());
            long cached = residentBytes(inputs);
            assumeTrue(read >= inputBytes / 2, "this system does not count the bytes a process reads from the disk (/proc/self/io)");
            assertEquals(List.of(), openInputs(inputs), "descriptors of the input left open after the run");
            if (writeBehind.equals("on")) {
                assertTrue(read < inputBytes * 5 / 4, "read " + read + " bytes from the disk for " + inputBytes + " of input");
                assertTrue(cached < inputBytes / 20, cached + " of " + inputBytes + " bytes of input left in the page cache");
            } else {
                assertTrue(cached > inputBytes / 2, "only " + cached + " of " + inputBytes + " bytes of input in the page cache without it");
            }
        }
    }

    private static void dropCached(Path file) throws Exception {
        int fd = NativeIO.openForReading(file);
        assumeTrue(fd >= 0, "native calls are off");
        NativeIO.dropCached(fd, 0, Files.size(file));
        NativeIO.close(fd);
    }

    private Path fileOf(long size) throws Exception {
        byte[] bytes = new byte[(int) size];
        new Random(1).nextBytes(bytes);
        Path file = Files.createTempFile(tmp, "input", "");
        Files.write(file, bytes);
        try (FileChannel channel = FileChannel.open(file, StandardOpenOption.WRITE)) {
            channel.force(true);
        }
        return file;
    }

    private static void touch(MemorySegment data) {
        long sum = 0;
        for (long at = 0; at < data.byteSize(); at += PAGE / 2) {
            sum += data.get(ValueLayout.JAVA_BYTE, at);
        }
        assertTrue(sum != Long.MIN_VALUE);
    }

    /** Pages of {@code file} in {@code [from, from + length)} (page-aligned) in the page cache. */
    private static long resident(Path file, long from, long length) throws Throwable {
        try (Arena arena = Arena.ofConfined(); FileChannel channel = FileChannel.open(file, StandardOpenOption.READ)) {
            return PageCache.residentPages(channel.map(FileChannel.MapMode.READ_ONLY, from, length, arena));
        }
    }

    private static long residentBytes(List<Path> files) throws Throwable {
        long bytes = 0;
        for (Path f : files) {
            long size = Files.size(f) / PAGE * PAGE;
            bytes += size == 0 ? 0 : resident(f, 0, size) * PAGE;
        }
        return bytes;
    }

    /** The input files this process holds a descriptor of. */
    private static List<Path> openInputs(List<Path> inputs) throws Exception {
        List<Path> open = new java.util.ArrayList<>();
        try (Stream<Path> fds = Files.list(Path.of("/proc/self/fd"))) {
            for (Path fd : fds.toList()) {
                try {
                    Path target = Files.readSymbolicLink(fd);
                    if (inputs.contains(target)) {
                        open.add(target);
                    }
                } catch (java.io.IOException closedMeanwhile) {
                    // the descriptor of the listing itself, or one closed since
                }
            }
        }
        return open;
    }

    /** This process's bytes read from the disk, as the kernel counts them. */
    private static long readFromDisk() throws Exception {
        return Files.readAllLines(Path.of("/proc/self/io")).stream().filter(l -> l.startsWith("read_bytes:"))
                .mapToLong(l -> Long.parseLong(l.substring("read_bytes:".length()).strip())).findFirst().orElse(0);
    }
}
