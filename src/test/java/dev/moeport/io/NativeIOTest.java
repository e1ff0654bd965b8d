package dev.moeport.io;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;
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

    /** {@code int mincore(void *addr, size_t length, unsigned char *vec)}: which pages of a file mapping are in the page cache. */
    private static final MethodHandle MINCORE = Linker.nativeLinker().downcallHandle(Linker.nativeLinker().defaultLookup().findOrThrow("mincore"),
            FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.ADDRESS, ValueLayout.JAVA_LONG, ValueLayout.ADDRESS));
    private static final MethodHandle GETPAGESIZE = Linker.nativeLinker().downcallHandle(Linker.nativeLinker().defaultLookup().findOrThrow("getpagesize"),
            FunctionDescriptor.of(ValueLayout.JAVA_INT));

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
            long pages = size / (int) GETPAGESIZE.invokeExact();
            assumeTrue(residentPages(mapping, arena) < pages / 2, "this file system keeps the file's pages in memory (tmpfs?)");
            NativeIO.advise(mapping, NativeIO.Advice.WILLNEED);
            long resident = 0;
            for (long deadline = System.nanoTime() + 20_000_000_000L; System.nanoTime() < deadline; Thread.sleep(20)) {
                resident = residentPages(mapping, arena);
                if (resident == pages) {
                    break;
                }
            }
            assertEquals(pages, resident, "pages of the advised range in the page cache");
        }
    }

    private static long residentPages(MemorySegment mapping, Arena arena) throws Throwable {
        long pages = mapping.byteSize() / (int) GETPAGESIZE.invokeExact();
        MemorySegment vec = arena.allocate(pages);
        assertEquals(0, (int) MINCORE.invokeExact(mapping, mapping.byteSize(), vec));
        long resident = 0;
        for (long i = 0; i < pages; i++) {
            resident += vec.get(ValueLayout.JAVA_BYTE, i) & 1;
        }
        return resident;
    }
}
