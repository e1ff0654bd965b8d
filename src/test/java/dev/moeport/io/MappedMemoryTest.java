package dev.moeport.io;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** A fault in a copy out of a mapping is reported by the copy, also once the JIT has compiled it. */
class MappedMemoryTest {
    @TempDir
    Path tmp;

    @Test
    void everyFaultOfACopyFromAShrunkFileIsReportedByTheCopy() throws Exception {
        Path file = tmp.resolve("input");
        Files.write(file, new byte[1 << 16]);
        int escaped = 0;
        int reported = 0;
        try (Arena arena = Arena.ofShared(); FileChannel channel = FileChannel.open(file, StandardOpenOption.READ, StandardOpenOption.WRITE)) {
            MemorySegment mapped = channel.map(FileChannel.MapMode.READ_ONLY, 0, 1 << 16, arena);
            MemorySegment into = arena.allocate(1 << 12);
            byte[] heap = new byte[1 << 12];
            assertTrue(MappedMemory.copy(mapped, 0, into, 0, into.byteSize()));
            channel.truncate(0);
            // enough rounds for the JIT to compile the copies (C2 from about 10 thousand calls)
            for (int round = 0; round < 40_000; round++) {
                try {
                    boolean copied = round % 2 == 0
                            ? MappedMemory.copy(mapped, (round % 16) * 4096L, into, 0, into.byteSize())
                            : MappedMemory.copy(mapped, (round % 16) * 4096L, heap, 0, heap.length);
                    assertFalse(copied, "round " + round);
                    reported++;
                } catch (InternalError e) {
                    escaped++;
                }
            }
        }
        assertEquals(0, escaped, "faults that escaped the copy (" + reported + " reported)");
    }
}
