package dev.moeport.io;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.file.Path;
import java.util.Map;
import java.util.concurrent.ConcurrentSkipListMap;
import java.util.function.BooleanSupplier;

/**
 * Drops from the page cache the input a run has read for the last time, when the input is larger than the memory the
 * run may use. Left to the kernel, pages read twice (an amax, then the quantizing pass) sit on its active list while the
 * pages read ahead for the next jobs, read once or not yet, are the first it reclaims, and are read again: a 9.3 GB
 * NVFP4 export in a 4 GiB memory cgroup on the 16-core GPU machine read 10.1-10.6 GB from the disk.
 *
 * <p>It knows the mapped input files by address ({@link #track}), so that a reader need only hand back the bytes it
 * is done with ({@link #drop}), and the read-ahead of such a run need only name the bytes it reads ({@link
 * #readThrough}).
 */
public final class DropBehind {
    /**
     * A file's mapping: {@code length} bytes at {@code address}, which are the file's from {@code position}; its
     * descriptor for the advice and the reads, opened at the first drop or read (a path opened once, not once a chunk:
     * an open is a round trip to the metadata server on a cluster's file system) and closed with the mapping.
     */
    private static final class Mapping {
        final long address;
        final long length;
        final Path file;
        final long position;
        /** Not yet opened ({@link #UNOPENED}), the descriptor, or -1: could not be opened, or closed. Set under this. */
        private volatile int fd = UNOPENED;
        private static final int UNOPENED = -2;

        Mapping(long address, long length, Path file, long position) {
            this.address = address;
            this.length = length;
            this.file = file;
            this.position = position;
        }

        /** Drops {@code [offset, offset + bytes)} of the mapping; the workers' advice runs side by side, the opening once. */
        void drop(long offset, long bytes) {
            int d = descriptor();
            if (d >= 0) {
                NativeIO.dropCached(d, position + offset, bytes);
            }
        }

        /**
         * Reads {@code [offset, offset + bytes)} of the mapping through {@code scratch}, a piece at a time while {@code
         * wanted}; false where a read failed or the mapping closed.
         */
        boolean readThrough(long offset, long bytes, MemorySegment scratch, BooleanSupplier wanted) {
            int d = descriptor();
            for (long at = offset, end = offset + bytes; at < end && wanted.getAsBoolean(); ) {
                long n = d < 0 ? -1 : NativeIO.read(d, scratch.asSlice(0, Math.min(scratch.byteSize(), end - at)), position + at);
                if (n <= 0) {
                    return false;
                }
                at += n;
            }
            return true;
        }

        /** The descriptor, opened here at the first call; -1 where it could not be opened, or closed. */
        private int descriptor() {
            int d = fd;
            return d == UNOPENED ? open() : d;
        }

        private synchronized int open() {
            if (fd == UNOPENED) {
                fd = NativeIO.openForReading(file);
            }
            return fd;
        }

        /**
         * When the mapping's arena closes: the run's readers are done with it. A mapping the run dropped behind or read
         * through leaves none of its pages cached: the kernel's read-ahead for a read call reads on past its end, into
         * the pages of jobs that may have run and dropped theirs before.
         */
        synchronized void close() {
            if (fd >= 0) {
                NativeIO.dropCached(fd, position, length);
                NativeIO.close(fd);
            }
            fd = -1;
        }
    }

    private static final ConcurrentSkipListMap<Long, Mapping> MAPPINGS = new ConcurrentSkipListMap<>();

    private DropBehind() {}

    /**
     * Records that {@code mapping} holds the bytes of {@code file} from {@code position}, until {@code arena} (the
     * mapping's) closes. Without native access nothing is recorded, and nothing dropped.
     */
    public static void track(MemorySegment mapping, Path file, long position, Arena arena) {
        if (!NativeIO.available() || mapping.byteSize() == 0) {
            return;
        }
        long address = mapping.address();
        Mapping m = new Mapping(address, mapping.byteSize(), file, position);
        MAPPINGS.put(address, m);
        MemorySegment.NULL.reinterpret(arena, ignored -> {
            MAPPINGS.remove(address, m);
            m.close();
        });
    }

    /**
     * Reads the file's bytes under {@code bytes}, a slice of a tracked mapping, into the page cache with read calls of
     * {@code scratch}'s size (into {@code scratch}, which keeps nothing of use), while {@code wanted} (a worker that
     * starts on the bytes reads them itself, and drops them once done: read after that, they would be read again): the
     * kernel serves them with read-ahead of its own, in larger disk requests than advice got in a run that drops behind.
     * False where {@code bytes} are of no tracked mapping, or a read failed.
     */
    public static boolean readThrough(MemorySegment bytes, MemorySegment scratch, BooleanSupplier wanted) {
        Mapping m = holding(bytes);
        return m != null && m.readThrough(bytes.address() - m.address, bytes.byteSize(), scratch, wanted);
    }

    /**
     * Drops the whole pages of {@code bytes}, a slice of a tracked mapping that this process no longer maps (see
     * {@link NativeIO.Advice#DONTNEED}), from the page cache. Anything else is left alone.
     */
    public static void drop(MemorySegment bytes) {
        Mapping m = holding(bytes);
        if (m != null) {
            m.drop(bytes.address() - m.address, bytes.byteSize());
        }
    }

    /** The tracked mapping that holds all of {@code bytes} (native, not empty), or null. */
    private static Mapping holding(MemorySegment bytes) {
        if (!bytes.isNative() || bytes.byteSize() == 0) {
            return null;
        }
        Map.Entry<Long, Mapping> entry = MAPPINGS.floorEntry(bytes.address());
        if (entry == null) {
            return null;
        }
        Mapping m = entry.getValue();
        return bytes.address() - m.address + bytes.byteSize() <= m.length ? m : null;
    }
}
