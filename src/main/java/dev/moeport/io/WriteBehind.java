package dev.moeport.io;

import java.nio.file.Path;
import java.util.ArrayDeque;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.locks.ReentrantReadWriteLock;

/**
 * Keeps an output file's written pages from piling up in memory when the output is larger than the memory the
 * run may use: each write is handed to the disk at once ({@code sync_file_range}), and the writes more than
 * {@link #WINDOW} behind are waited for and dropped from the page cache ({@code posix_fadvise}). Without it, a
 * memory-limited run fills its memory with dirty pages that reclaim cannot free, and reading stalls: a cold 9.3 GB
 * BF16 export in a 4 GiB memory cgroup on the 16-core GPU machine ran at 0.54-0.64 GB/s where {@code dd} copied at
 * 0.59-0.78, and at 0.77 with it. When the output fits in memory, the page cache takes it faster than the disk (2.7
 * GB/s there, 1.6-1.9 with write-behind), so {@link Choice#AUTO} leaves it off. Where the file system takes writes
 * past the page cache, {@link DirectWriter} writes instead (dev.moeport.format.PartialFile chooses).
 */
public final class WriteBehind implements AutoCloseable {
    /** Bytes of a file's writes that may be on their way to the disk: 64 and 256 MB did alike. */
    static final long WINDOW = 64L << 20;

    /** Nothing: the page cache writes the file back when it will. */
    public static final WriteBehind NONE = new WriteBehind(-1, 0);

    /** Whether a run hands its writes to the disk as it goes. */
    public enum Choice {
        ON, OFF,
        /**
         * When what the run reads and writes is more than the memory it may use ({@link MemoryLimit}): the page cache
         * then drops pages as the run goes, and dirty ones only once the disk has them. (Counting the output alone left
         * it off for a 9.3 GB NVFP4 export in 4 GiB, whose 3.64 GB of output fit: 11.5-12.1 s, 10.3-10.8 with it on.)
         */
        AUTO;

        public boolean chooses(long inputBytes, long outputBytes) {
            return switch (this) {
                case ON -> true;
                case OFF -> false;
                case AUTO -> inputBytes + outputBytes > MemoryLimit.available();
            };
        }
    }

    /** Guards the descriptor: writes use it together, closing waits for them. */
    private final ReentrantReadWriteLock lock = new ReentrantReadWriteLock();
    private final ArrayDeque<long[]> pending = new ArrayDeque<>();
    private long pendingBytes;
    private final long window;
    private int fd;

    private WriteBehind(int fd, long window) {
        this.fd = fd;
        this.window = window;
    }

    /** Write-behind for {@code file}, or {@link #NONE} when native calls are off. */
    public static WriteBehind of(Path file) {
        return of(file, WINDOW);
    }

    static WriteBehind of(Path file, long window) {
        int fd = NativeIO.openForWriting(file);
        return fd < 0 ? NONE : new WriteBehind(fd, window);
    }

    /** {@code [offset, offset + length)} of the file was just written. */
    public void written(long offset, long length) {
        if (this == NONE || length == 0) {
            return;
        }
        lock.readLock().lock();
        try {
            if (fd < 0) {
                return;
            }
            NativeIO.startWriteBack(fd, offset, length);
            List<long[]> behind = new ArrayList<>();
            synchronized (pending) {
                pending.add(new long[] {offset, length});
                pendingBytes += length;
                while (pendingBytes > window) {
                    long[] oldest = pending.poll();
                    pendingBytes -= oldest[1];
                    behind.add(oldest);
                }
            }
            for (long[] range : behind) {
                NativeIO.dropWritten(fd, range[0], range[1]);
            }
        } finally {
            lock.readLock().unlock();
        }
    }

    @Override
    public void close() {
        if (this == NONE) {
            return;
        }
        lock.writeLock().lock();
        try {
            if (fd >= 0) {
                NativeIO.close(fd);
                fd = -1;
            }
        } finally {
            lock.writeLock().unlock();
        }
    }
}
