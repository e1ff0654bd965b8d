package dev.moeport.io;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Advice reaches the kernel as asked: the pages a WILLNEED names are read, all of them. */
class NativeIOTest {
    @TempDir
    Path tmp;

    @Test
    void willNeedReadsTheWholeRangeNotOnlyTheKernelsReadAheadWindow() throws Throwable {
        // Linux reads at most its read-ahead window per call (8 MB on the build machine, 128 KB by default): a 64 MB
        // file advised in one call got its first window only.
        long size = 64L << 20;
        Path file = tmp.resolve("input");
        try (FileChannel channel = FileChannel.open(file, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE)) {
            ByteBuffer block = ByteBuffer.allocate(1 << 20);
            for (long at = 0; at < size; at += block.capacity()) {
                block.clear();
                while (block.hasRemaining()) {
                    channel.write(block, at + block.position());
                }
            }
            channel.force(true);
        }
        int fd = NativeIO.openForWriting(file);
        assumeTrue(fd >= 0, "native calls are off");
        NativeIO.dropWritten(fd, 0, size);
        NativeIO.close(fd);
        try (Arena arena = Arena.ofConfined(); FileChannel channel = FileChannel.open(file, StandardOpenOption.READ)) {
            MemorySegment mapping = channel.map(FileChannel.MapMode.READ_ONLY, 0, size, arena);
            long pages = size / PageCache.PAGE_SIZE;
            assumeTrue(PageCache.residentPages(mapping) < pages / 2, "this file system keeps the file's pages in memory (tmpfs?)");
            NativeIO.advise(mapping, NativeIO.Advice.WILLNEED);
            long resident = 0;
            for (long deadline = System.nanoTime() + 20_000_000_000L; System.nanoTime() < deadline; Thread.sleep(20)) {
                resident = PageCache.residentPages(mapping);
                if (resident == pages) {
                    break;
                }
            }
            assertEquals(pages, resident, "pages of the advised range in the page cache");
        }
    }
}
