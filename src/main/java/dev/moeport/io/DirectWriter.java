package dev.moeport.io;

import com.sun.nio.file.ExtendedOpenOption;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayDeque;
import java.util.HashMap;
import java.util.Map;
import java.util.concurrent.ConcurrentLinkedQueue;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Semaphore;
import java.util.function.Consumer;

/**
 * Writes a file past the page cache ({@code O_DIRECT}), for runs whose input and output do not fit in the memory they may
 * use. Written through the page cache, such an output's dirty pages are throttled within the memory cgroup and the
 * reads wait behind them: on the 16-core GPU machine in 4 GiB, {@code dd} copied a 9.3 GB checkpoint in 13.1 s through
 * the page cache and 11.1 s with {@code oflag=direct} (12.9 s where it fits, with {@code fsync}).
 *
 * <p>The disk takes whole blocks at block-aligned positions from block-aligned memory. Writes land anywhere, from any
 * thread, never overlapping: each is copied into aligned memory, its whole blocks go to the disk, and its first and
 * last blocks, which it may share with its neighbours, are gathered in memory until every byte of them has arrived.
 * The disk writes run on threads of their own, many requests side by side and a bounded amount of memory at a time,
 * so that a worker goes on computing while the disk writes, as it would through the page cache. {@link #close} waits for them, writes the
 * blocks still incomplete (unwritten bytes read as zeros, as in any file) and cuts the file to its length.
 */
public final class DirectWriter implements AutoCloseable {
    /** Bytes copied and written at a time. */
    private static final int STEP = 256 << 10;
    /** The largest block size served (and the alignment of the memory written from). */
    private static final int MAX_BLOCK = 1 << 16;
    /**
     * Steps on their way to the disk at once, of all files (64 MB), and the threads that write them: with 32 steps of 1 MB
     * and 4 threads, an NVFP4 export's workers waited for a free step 80% of their time, and took 10.8-10.9 s in 4 GiB on
     * the 16-core GPU machine where this took 9.7-9.8 (12.2-12.3 against 12.8-14.1 s on the 2-core build machine).
     */
    private static final int IN_FLIGHT = 256;
    private static final Semaphore FREE_STEPS = new Semaphore(IN_FLIGHT);
    private static final ConcurrentLinkedQueue<MemorySegment> STEPS = new ConcurrentLinkedQueue<>();
    private static final ExecutorService DISK = Executors.newFixedThreadPool(16,
            Thread.ofPlatform().daemon().name("moeport-direct-write-", 0).factory());

    private final Path file;
    private final FileChannel channel;
    private final int block;
    private final long length;
    /** Memory of the incomplete blocks, freed with the writer. */
    private final Arena arena = Arena.ofShared();
    /** Blocks some of whose bytes have arrived, by index, and memory for more (guarded by {@code partial}). */
    private final Map<Long, Partial> partial = new HashMap<>();
    private final ArrayDeque<MemorySegment> spare = new ArrayDeque<>();
    /** Disk writes submitted and not yet done (guarded by this). */
    private int pending;
    /** The first disk write that failed (guarded by this). */
    private IOException failure;

    private record Partial(MemorySegment bytes, long[] arrived) {}

    private DirectWriter(Path file, FileChannel channel, int block, long length) {
        this.file = file;
        this.channel = channel;
        this.block = block;
        this.length = length;
    }

    /**
     * A direct writer of {@code file}, {@code length} bytes long, or null where the file system refuses {@code O_DIRECT}
     * (tmpfs) or has blocks other than a power of two up to {@link #MAX_BLOCK}.
     */
    public static DirectWriter open(Path file, long length) {
        try {
            long block = Files.getFileStore(file).getBlockSize();
            if (block <= 0 || Long.bitCount(block) != 1 || block > MAX_BLOCK) {
                return null;
            }
            FileChannel channel = FileChannel.open(file, StandardOpenOption.WRITE, ExtendedOpenOption.DIRECT);
            return new DirectWriter(file, channel, (int) block, length);
        } catch (IOException | UnsupportedOperationException e) {
            return null;
        }
    }

    /**
     * Writes {@code bytes} at {@code position}: a step at a time copied into aligned memory and shown to {@code sees}, in
     * order; the step's whole blocks go to the disk at once, those at its ends once their other bytes have arrived.
     * Reports a failed disk write of the file's, where one happened since.
     *
     * @throws SourceFault where {@code bytes} could not be read (a mapping whose file shrank): the copy fails with an
     *     error, where a read of the mapping by the caller's checksum would have crashed the JVM
     */
    public void write(long position, MemorySegment bytes, Consumer<MemorySegment> sees) throws IOException {
        long end = position + bytes.byteSize();
        for (long at = position; at < end; ) {
            throwFailure();
            // The step's bytes sit in its memory at their offset within a block, so that its whole blocks are aligned there too.
            long first = Math.floorDiv(at, block) * block;
            long stepEnd = Math.min(end, first + STEP);
            MemorySegment step = takeStep();
            if (!MappedMemory.copy(bytes, at - position, step, at - first, stepEnd - at)) {
                giveStep(step);
                throw new SourceFault();
            }
            sees.accept(step.asSlice(at - first, stepEnd - at));
            // [at, head) lies in the block of at, [head, tail) is whole blocks (none where the step ends before the first
            // boundary after at), [tail, stepEnd) lies in the block of stepEnd.
            long head = Math.min(stepEnd, at == first ? at : first + block);
            long tail = Math.max(head, Math.floorDiv(stepEnd, block) * block);
            if (at < head) {
                gather(step, first, at, head);
            }
            if (tail < stepEnd) {
                gather(step, first, tail, stepEnd);
            }
            if (head < tail) {
                submit(step.asSlice(head - first, tail - head), head, () -> giveStep(step));
            } else {
                giveStep(step);
            }
            at = stepEnd;
        }
    }

    /** The bytes to write could not be read: a mapped input's file shrank or changed. */
    public static final class SourceFault extends IOException {
        SourceFault() {
            super("the bytes to write could not be read: a mapped input's file shrank or changed");
        }
    }

    /** Adds {@code [from, to)} of the file, within one block, held in {@code step} from file position {@code base}. */
    private void gather(MemorySegment step, long base, long from, long to) {
        long index = Math.floorDiv(from, block);
        long blockStart = index * block;
        Partial p;
        synchronized (partial) {
            p = partial.computeIfAbsent(index, k -> new Partial(spare.isEmpty() ? arena.allocate(block, block) : spare.pop().fill((byte) 0), new long[1]));
        }
        boolean complete;
        synchronized (p) {
            MemorySegment.copy(step, from - base, p.bytes(), from - blockStart, to - from);
            p.arrived()[0] += to - from;
            complete = p.arrived()[0] == Math.min(block, length - blockStart);
        }
        if (complete) {
            synchronized (partial) {
                partial.remove(index);
            }
            submit(p.bytes(), blockStart, () -> {
                synchronized (partial) {
                    spare.push(p.bytes());
                }
            });
        }
    }

    /** Writes {@code blocks} at {@code position} on a disk thread, then runs {@code done}. */
    private void submit(MemorySegment blocks, long position, Runnable done) {
        synchronized (this) {
            pending++;
        }
        DISK.execute(() -> {
            IOException failed = null;
            try {
                put(blocks, position);
            } catch (IOException e) {
                failed = e;
            } finally {
                done.run();
                synchronized (this) {
                    if (failure == null && failed != null) {
                        failure = failed;
                    }
                    pending--;
                    notifyAll();
                }
            }
        });
    }

    private void put(MemorySegment blocks, long position) throws IOException {
        ByteBuffer buffer = blocks.asByteBuffer();
        while (buffer.hasRemaining()) {
            channel.write(buffer, position + buffer.position());
        }
    }

    private synchronized void throwFailure() throws IOException {
        if (failure != null) {
            throw new IOException("writing " + file + " failed: " + failure.getMessage(), failure);
        }
    }

    /** Waits until the disk writes submitted are done. */
    private synchronized void awaitWrites() {
        boolean interrupted = false;
        while (pending > 0) {
            try {
                wait();
            } catch (InterruptedException e) {
                interrupted = true;
            }
        }
        if (interrupted) {
            Thread.currentThread().interrupt();
        }
    }

    private static MemorySegment takeStep() {
        FREE_STEPS.acquireUninterruptibly();
        MemorySegment step = STEPS.poll();
        return step != null ? step : Arena.global().allocate(STEP, MAX_BLOCK);
    }

    private static void giveStep(MemorySegment step) {
        STEPS.add(step);
        FREE_STEPS.release();
    }

    /** Waits for the disk writes, writes the blocks still incomplete and cuts the file to its length (a last block goes whole). */
    @Override
    public void close() throws IOException {
        awaitWrites();
        try (channel; arena) {
            throwFailure();
            for (Map.Entry<Long, Partial> e : partial.entrySet()) {
                put(e.getValue().bytes(), e.getKey() * block);
            }
            partial.clear();
            if (channel.size() > length) {
                channel.truncate(length);
            }
        }
    }

    /** Waits for the disk writes and closes it without writing what is incomplete (the file is being deleted). */
    public void abandon() {
        awaitWrites();
        try {
            channel.close();
            arena.close();
        } catch (IOException | IllegalStateException ignored) {
            // Best effort: the file is deleted next (a worker still writing, interrupted, keeps its memory till the end).
        }
    }

    @Override
    public String toString() {
        return "direct writes of " + file;
    }
}
