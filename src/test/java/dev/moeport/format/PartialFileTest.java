package dev.moeport.format;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.moeport.format.safetensors.SafetensorsWriter;
import java.io.ByteArrayOutputStream;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.Random;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.atomic.AtomicReference;
import java.util.zip.CRC32C;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** Writes of every size and source land as given, whether through a mapping or not, and the file's CRC-32C follows. */
class PartialFileTest {
    @TempDir
    Path tmp;

    /** With write-behind on, the file's writes go past the page cache ({@link dev.moeport.io.DirectWriter}) where the file system allows. */
    @ParameterizedTest(name = "write-behind {0}")
    @ValueSource(booleans = {false, true})
    void writesOfEverySourceAndSizeLandInPlaceWithTheirChecksum(boolean writeBehind) throws Exception {
        Random random = new Random(3);
        // sizes around a piece, around the size that goes through a mapping, and far above both
        long[] sizes = {0, 1, 4095, PartialFile.PIECE - 1, PartialFile.PIECE + 1, PartialFile.MAP_AT_LEAST - 1,
                PartialFile.MAP_AT_LEAST, PartialFile.MAP_AT_LEAST + 4097, 5L * PartialFile.MAP_AT_LEAST + 12345};
        byte[] expected = new byte[(int) java.util.Arrays.stream(sizes).sum()];
        random.nextBytes(expected);
        Path input = tmp.resolve("input");
        Files.write(input, expected);
        List<long[]> writes = new ArrayList<>();
        long at = 0;
        for (long size : sizes) {
            writes.add(new long[] {at, size});
            at += size;
        }
        Collections.shuffle(writes, random);
        Path target = tmp.resolve("out.bin");
        PartialFile file = new PartialFile(target, expected.length, writeBehind);
        try (Arena arena = Arena.ofShared(); FileChannel in = FileChannel.open(input)) {
            MemorySegment mapped = in.map(FileChannel.MapMode.READ_ONLY, 0, expected.length, arena);
            MemorySegment heap = MemorySegment.ofArray(expected);
            // The largest writes hold the file's write(2) while the first half of the others run: their large ones go
            // through mappings, those of the second half through write(2).
            List<long[]> largest = writes.stream().sorted(java.util.Comparator.comparingLong(w -> -w[1])).limit(PartialFile.WRITE_WRITERS).toList();
            writes.removeAll(largest);
            CountDownLatch release = new CountDownLatch(1);
            List<Holder> holders = new ArrayList<>();
            for (long[] w : largest) {
                holders.add(Holder.start(file, w[0], heap.asSlice(w[0], w[1]), release));
            }
            long[] secondHalf = writes.get(writes.size() / 2);
            boolean fromMapping = false;
            for (long[] w : writes) {
                if (w == secondHalf) {
                    Holder.finish(holders, release);
                }
                // alternately from a mapped input (staged on the way) and from memory
                MemorySegment source = (fromMapping ? mapped : heap).asSlice(w[0], w[1]);
                fromMapping = !fromMapping;
                ByteArrayOutputStream seen = new ByteArrayOutputStream();
                file.write(w[0], source, piece -> {
                    byte[] b = new byte[piece.remaining()];
                    piece.get(b);
                    seen.writeBytes(b);
                });
                assertArrayEquals(java.util.Arrays.copyOfRange(expected, (int) w[0], (int) (w[0] + w[1])), seen.toByteArray(),
                        "what the observer saw of the write of " + w[1] + " bytes");
            }
        }
        assertTrue(Files.exists(SafetensorsWriter.partialName(target)));
        assertFalse(Files.exists(target), "not in place before it is finished");
        long crc = file.finish(false).orElseThrow();
        assertArrayEquals(expected, Files.readAllBytes(target));
        CRC32C whole = new CRC32C();
        whole.update(expected);
        assertEquals(whole.getValue(), crc);
    }

    /** Bytes of a mapped input whose file shrank: the write fails with InputChanged, which names the input, both ways. */
    @ParameterizedTest(name = "write-behind {0}")
    @ValueSource(booleans = {false, true})
    void aWriteFromAMappedInputWhoseFileShrankIsInputChanged(boolean writeBehind) throws Exception {
        int length = 3 * PartialFile.PIECE;
        Path input = tmp.resolve("input");
        Files.write(input, new byte[length]);
        PartialFile file = new PartialFile(tmp.resolve("out.bin"), length, writeBehind);
        try (Arena arena = Arena.ofShared(); FileChannel in = FileChannel.open(input, java.nio.file.StandardOpenOption.READ,
                java.nio.file.StandardOpenOption.WRITE)) {
            MemorySegment mapped = in.map(FileChannel.MapMode.READ_ONLY, 0, length, arena);
            in.truncate(PartialFile.PIECE);
            org.junit.jupiter.api.Assertions.assertThrows(PartialFile.InputChanged.class, () -> file.write(0, mapped));
        }
        file.abandon();
    }

    @Test
    void aMappedWriteWhoseFileShrinksUnderItIsAnIoErrorNotACrash() throws Exception {
        // A page the kernel cannot give a mapping (an I/O error, a full disk) is a SIGBUS: the copy into the mapping
        // must end in an error. Here the partial file is cut short while the write is between two of its pieces.
        // Other threads' writes hold the file's write(2), so that this one goes through a mapping.
        Path target = tmp.resolve("cut.bin");
        long length = 4L * PartialFile.MAP_AT_LEAST;
        PartialFile file = new PartialFile(target, length + PartialFile.WRITE_WRITERS * PartialFile.MAP_AT_LEAST, false);
        org.junit.jupiter.api.Assumptions.assumeTrue(file.mapsWrites(), "no fallocate on this file system: no writes through mappings");
        CountDownLatch release = new CountDownLatch(1);
        List<Holder> holders = new ArrayList<>();
        for (int k = 0; k < PartialFile.WRITE_WRITERS; k++) {
            holders.add(Holder.start(file, length + k * PartialFile.MAP_AT_LEAST, MemorySegment.ofArray(new byte[(int) PartialFile.MAP_AT_LEAST]), release));
        }
        Path partial = SafetensorsWriter.partialName(target);
        java.io.IOException e = org.junit.jupiter.api.Assertions.assertThrows(java.io.IOException.class,
                () -> file.write(0, MemorySegment.ofArray(new byte[(int) length]), piece -> {
                    try (FileChannel cut = FileChannel.open(partial, java.nio.file.StandardOpenOption.WRITE)) {
                        cut.truncate(0);
                    } catch (java.io.IOException io) {
                        throw new java.io.UncheckedIOException(io);
                    }
                }));
        assertTrue(e.getMessage().contains("could not write through a mapping of " + partial), e.getMessage());
        Holder.finish(holders, release);
        file.abandon();
        assertFalse(Files.exists(partial));
    }

    /** A large write on a thread of its own that keeps one of the file's places in write(2) (its first piece waits for a release). */
    private record Holder(Thread thread, AtomicReference<Throwable> failure) {
        static Holder start(PartialFile file, long at, MemorySegment bytes, CountDownLatch release) throws InterruptedException {
            CountDownLatch writing = new CountDownLatch(1);
            AtomicReference<Throwable> failure = new AtomicReference<>();
            Thread thread = Thread.ofPlatform().start(() -> {
                try {
                    file.write(at, bytes, piece -> {
                        writing.countDown();
                        try {
                            release.await();
                        } catch (InterruptedException e) {
                            throw new IllegalStateException(e);
                        }
                    });
                } catch (Throwable t) {
                    failure.set(t);
                }
            });
            writing.await();
            return new Holder(thread, failure);
        }

        static void finish(List<Holder> holders, CountDownLatch release) throws InterruptedException {
            release.countDown();
            for (Holder holder : holders) {
                holder.thread.join();
                assertEquals(null, holder.failure.get());
            }
        }
    }

    @Test
    void anAbandonedFileLeavesNothing() throws Exception {
        Path target = tmp.resolve("gone.bin");
        PartialFile file = new PartialFile(target, 3L << 20, false);
        file.write(0, MemorySegment.ofArray(new byte[2 << 20]));
        file.abandon();
        try (var left = Files.list(tmp)) {
            assertEquals(List.of(), left.toList());
        }
        assertFalse(Files.exists(target));
    }
}
