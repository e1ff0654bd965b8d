package dev.moeport.io;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.List;
import java.util.Random;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Writes past the page cache land as given, whatever their alignment, order and thread, and the file has its length. */
class DirectWriterTest {
    @TempDir
    Path tmp;

    private DirectWriter open(Path file, long length) throws Exception {
        Files.write(file, new byte[0]);
        DirectWriter writer = DirectWriter.open(file, length);
        Assumptions.assumeTrue(writer != null, "this file system refuses O_DIRECT (tmpfs?): " + Files.getFileStore(file).type());
        return writer;
    }

    @Test
    void unalignedWritesInAnyOrderFromManyThreadsLandInPlace() throws Exception {
        Random random = new Random(7);
        int length = 3 * (1 << 20) + 777;
        byte[] expected = new byte[length];
        random.nextBytes(expected);
        // Cuts of every kind: a byte, within one block, across one boundary, whole blocks plus ends, more than a step.
        List<int[]> writes = new ArrayList<>();
        int[] sizes = {1, 3, 100, 4095, 4096, 4097, 9000, 70_000, 262_144, 1_300_000};
        for (int at = 0; at < length; ) {
            int size = Math.min(length - at, sizes[random.nextInt(sizes.length)]);
            writes.add(new int[] {at, size});
            at += size;
        }
        Collections.shuffle(writes, random);
        Path file = tmp.resolve("out.bin");
        DirectWriter writer = open(file, length);
        ConcurrentLinkedQueue<int[]> queue = new ConcurrentLinkedQueue<>(writes);
        try (Arena arena = Arena.ofShared(); ExecutorService threads = Executors.newFixedThreadPool(4)) {
            MemorySegment offHeap = arena.allocate(length).copyFrom(MemorySegment.ofArray(expected));
            List<Future<?>> done = new ArrayList<>();
            for (int t = 0; t < 4; t++) {
                boolean fromHeap = t % 2 == 0;
                done.add(threads.submit(() -> {
                    for (int[] w; (w = queue.poll()) != null; ) {
                        MemorySegment source = fromHeap ? MemorySegment.ofArray(expected) : offHeap;
                        java.io.ByteArrayOutputStream seen = new java.io.ByteArrayOutputStream();
                        writer.write(w[0], source.asSlice(w[0], w[1]), step -> seen.writeBytes(step.toArray(java.lang.foreign.ValueLayout.JAVA_BYTE)));
                        assertArrayEquals(Arrays.copyOfRange(expected, w[0], w[0] + w[1]), seen.toByteArray(), "what the write of " + w[1] + " bytes showed");
                    }
                    return null;
                }));
            }
            for (Future<?> f : done) {
                f.get();
            }
        }
        writer.close();
        assertEquals(length, Files.size(file));
        assertArrayEquals(expected, Files.readAllBytes(file));
    }

    @Test
    void bytesNeverWrittenReadAsZerosAndTheLastBlockIsCut() throws Exception {
        int length = 5 * 4096 + 10;
        byte[] part = new byte[6000];
        Arrays.fill(part, (byte) 7);
        Path file = tmp.resolve("gaps.bin");
        DirectWriter writer = open(file, length);
        writer.write(5000, MemorySegment.ofArray(part), step -> { });
        writer.write(length - 3, MemorySegment.ofArray(new byte[] {1, 2, 3}), step -> { });
        writer.close();
        byte[] expected = new byte[length];
        Arrays.fill(expected, 5000, 11_000, (byte) 7);
        expected[length - 3] = 1;
        expected[length - 2] = 2;
        expected[length - 1] = 3;
        assertEquals(length, Files.size(file));
        assertArrayEquals(expected, Files.readAllBytes(file));
    }

    /** A mapped source whose file shrank is an error of its own (the JVM would crash where a checksum read the mapping). */
    @Test
    void aSourceMappingWhoseFileShrankIsASourceFault() throws Exception {
        Path input = tmp.resolve("input");
        Files.write(input, new byte[1 << 20]);
        Path file = tmp.resolve("out.bin");
        DirectWriter writer = open(file, 1 << 20);
        try (Arena arena = Arena.ofShared(); java.nio.channels.FileChannel in = java.nio.channels.FileChannel.open(input,
                java.nio.file.StandardOpenOption.READ, java.nio.file.StandardOpenOption.WRITE)) {
            MemorySegment mapped = in.map(java.nio.channels.FileChannel.MapMode.READ_ONLY, 0, 1 << 20, arena);
            in.truncate(0);
            org.junit.jupiter.api.Assertions.assertThrows(DirectWriter.SourceFault.class, () -> writer.write(0, mapped, step -> { }));
        }
        writer.abandon();
    }
}
