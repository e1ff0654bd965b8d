package dev.moeport.io;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;

/** Which pages of a file mapping are in the page cache, as the kernel says ({@code mincore}): for tests of page-cache advice. */
final class PageCache {
    private PageCache() {}

    /** {@code int mincore(void *addr, size_t length, unsigned char *vec)}. */
    private static final MethodHandle MINCORE = Linker.nativeLinker().downcallHandle(Linker.nativeLinker().defaultLookup().findOrThrow("mincore"),
            FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.ADDRESS, ValueLayout.JAVA_LONG, ValueLayout.ADDRESS));

    static final int PAGE_SIZE = pageSize();

    /** Pages of {@code mapping} (page-aligned, as a file mapping is) in the page cache. */
    static long residentPages(MemorySegment mapping) throws Throwable {
        long pages = mapping.byteSize() / PAGE_SIZE;
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment vec = arena.allocate(pages);
            assertEquals(0, (int) MINCORE.invokeExact(mapping, mapping.byteSize(), vec));
            long resident = 0;
            for (long i = 0; i < pages; i++) {
                resident += vec.get(ValueLayout.JAVA_BYTE, i) & 1;
            }
            return resident;
        }
    }

    private static int pageSize() {
        try {
            return (int) Linker.nativeLinker().downcallHandle(Linker.nativeLinker().defaultLookup().findOrThrow("getpagesize"),
                    FunctionDescriptor.of(ValueLayout.JAVA_INT)).invokeExact();
        } catch (Throwable t) {
            throw new IllegalStateException("getpagesize failed", t);
        }
    }
}
