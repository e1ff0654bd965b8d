package dev.moeport.exec;

import dev.moeport.io.DropBehind;
import dev.moeport.io.MemoryLimit;
import dev.moeport.io.NativeIO;
import dev.moeport.plan.Piece;
import dev.moeport.tensor.Tensor;
import dev.moeport.tensor.TensorView;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.Collection;
import java.util.Comparator;
import java.util.List;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.function.BiConsumer;
import java.util.function.BooleanSupplier;
import java.util.function.ToLongFunction;

/**
 * Asks the kernel to read the mapped inputs of the jobs about to start, a window of bytes ahead of the workers in the
 * order they take jobs, from a thread of its own. On a cold page cache a mapping's faults read ahead only a little at a
 * time (a 9.3 GB BF16 export on the 16-core GPU machine ran at 48% of cold {@code cat} with the next chunk of each job
 * advised alone, 72% with a window); on a warm one the advice finds the pages present and costs next to nothing. The
 * thread starts reading before the workers do (while the kernels warm up), and no worker waits for a read it did not
 * need: the kernel can take its time to queue the reads of a window. The window bounds what is asked for, so inputs
 * larger than memory do not push out the pages the workers are about to read. A run that drops behind reads the window
 * instead of advising it ({@link #readThrough}), one read call after another.
 */
final class ReadAhead<T> implements AutoCloseable {
    /**
     * Bytes of input advised ahead of the newest started job: 256 MB did best of 64, 256 and 1024, measured while the kernel
     * read only the first 8 MB of each tensor advised ({@link NativeIO#advise} now asks for all of it).
     */
    static final long WINDOW = 256L << 20;

    /** The read-ahead while planning ({@link #largestWhilePlanning}), or null. */
    private static volatile Planning planning;

    /** A read-ahead while planning: its thread, and whether it is to stop at its next step. */
    private record Planning(Thread thread, AtomicBoolean stop) {}

    /**
     * Bytes of a read call of {@link #readThrough}: more than the kernel reads ahead at once (8 MB on the GPU machine), so
     * that a read where the last ended nowhere near is served as the start of a stream (in large pieces of memory), not
     * as a small random read.
     */
    private static final long READ_STEP = 16L << 20;
    /**
     * How far beyond the newest started job a job begins for {@link #readThrough} to read it, and to go on reading it:
     * closer, a worker would fault its pages in as the read does, and drop them before the read is done with them (read
     * twice). The jobs closer are advised.
     */
    private static final long CLEARANCE = 2 * READ_STEP;
    /**
     * Tensors smaller are advised: a read of them gains nothing in request size, and the kernel reads on past a read's end
     * (a window, 8 MB), into the pages of neighbours that may be done and dropped (read twice). It does so past a large
     * tensor too, where the next in the order is not the next in the file: about 1% of a 9.3 GB NVFP4 export's input.
     */
    private static final long READ_THROUGH_FROM = 4L << 20;

    /** Bytes the read-ahead while planning asks for between looks at whether to stop: a chunk's. */
    private static final long PLANNING_STEP = PieceReader.CHUNK_BYTES;

    private final List<T> order;
    /** {@code upTo[k]}: the input bytes of jobs {@code [0, k)} of the order. */
    private final long[] upTo;
    private final long window;
    private final long clearance;
    private final BiConsumer<T, BooleanSupplier> advise;
    private final Thread thread;
    /** Jobs of the order that have started (guarded by this). */
    private int started;
    private boolean closed;

    /**
     * Starts advising the first window of {@code order}, the pieces each task reads, at once (the same the read-ahead
     * while planning began with). A run that drops its input behind it ({@link dev.moeport.io.DropBehind}) first stops the
     * read-ahead while planning and waits for its last request: advice after a worker dropped its pages would have
     * them read again (up to 16 MB of a 56 MB input in a test).
     */
    static ReadAhead<List<Piece>> of(List<List<Piece>> order, boolean dropBehind) {
        Planning ahead = planning;
        if (dropBehind && ahead != null) {
            ahead.stop().set(true);
            try {
                ahead.thread().join();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
        ToLongFunction<List<Piece>> bytes = pieces -> pieces.stream().mapToLong(Piece::inputBytes).sum();
        return dropBehind ? new ReadAhead<>(order, bytes, WINDOW, CLEARANCE, readThrough())
                : new ReadAhead<>(order, bytes, WINDOW, 0, (pieces, clear) -> advise(pieces));
    }

    /**
     * Calls {@code advise} on each of {@code order} in turn, from its first, while it begins within {@code window} bytes
     * of the newest started, with whether it still begins {@code clearance} bytes or more beyond the newest started (which
     * a long read-ahead looks at as it goes; with a clearance of 0: whether no worker has started it).
     */
    ReadAhead(List<T> order, ToLongFunction<T> bytes, long window, long clearance, BiConsumer<T, BooleanSupplier> advise) {
        this.order = order;
        this.window = window;
        this.clearance = clearance;
        this.advise = advise;
        this.upTo = new long[order.size() + 1];
        for (int k = 0; k < order.size(); k++) {
            upTo[k + 1] = upTo[k] + bytes.applyAsLong(order.get(k));
        }
        this.thread = Thread.ofPlatform().daemon().name("moeport-read-ahead").start(this::adviseAhead);
    }

    /** Called as job {@code index} of the order starts: lets the window move on past it. */
    synchronized void starting(int index) {
        if (index + 1 > started) {
            started = index + 1;
            notifyAll();
        }
    }

    /** Stops advising (the run finished or failed) and waits for the thread's advice in flight. */
    @Override
    public void close() {
        synchronized (this) {
            closed = true;
            notifyAll();
        }
        try {
            thread.join();
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    /**
     * Asks the kernel, from a thread of its own, to read the largest mapped tensors of an input, at most a gigabyte and an
     * eighth of the memory available: a run's first jobs read them (largest first), and the disk would otherwise wait
     * for the plan (half a second of a 9.3 GB export's start on 16 cores). Advice on an input closed in the meantime
     * is refused by the kernel, which changes nothing.
     */
    static void largestWhilePlanning(Collection<? extends Tensor> tensors) {
        long budget = Math.min(1L << 30, MemoryLimit.available() / 8);
        AtomicBoolean stop = new AtomicBoolean();
        Thread thread = Thread.ofPlatform().daemon().name("moeport-read-ahead").unstarted(() -> {
            List<TensorView> largest = tensors.stream().filter(TensorView.class::isInstance).map(TensorView.class::cast)
                    .sorted(Comparator.comparingLong(TensorView::byteSize).reversed()).toList();
            long left = budget;
            for (TensorView view : largest) {
                long length = Math.min(left, view.byteSize());
                for (long at = 0; at < length; at += PLANNING_STEP) {
                    MemorySegment step = view.data().asSlice(at, Math.min(PLANNING_STEP, length - at));
                    if (stop.get() || !hint(() -> NativeIO.advise(step, NativeIO.Advice.WILLNEED))) {
                        return;
                    }
                }
                left -= view.byteSize();
                if (left <= 0) {
                    return;
                }
            }
        });
        planning = new Planning(thread, stop);
        thread.start();
    }

    private void adviseAhead() {
        for (int next = 0; next < order.size(); next++) {
            synchronized (this) {
                while (!closed && upTo[next] >= upTo[started] + window) {
                    try {
                        wait();
                    } catch (InterruptedException e) {
                        return;
                    }
                }
                if (closed) {
                    return;
                }
                if (next < started) {
                    continue; // its worker reads it already (and may have dropped what it read: advice would read it again)
                }
            }
            T job = order.get(next);
            int index = next;
            if (!hint(() -> advise.accept(job, () -> clear(index)))) {
                return;
            }
        }
    }

    /** Whether job {@code index} of the order begins {@code clearance} bytes or more beyond the newest started, and the read-ahead goes on. */
    private synchronized boolean clear(int index) {
        return !closed && upTo[index] >= upTo[started] + clearance;
    }

    /** Gives advice, which is a hint: where it fails (the native call), it changes speed, never output, and stops. */
    private static boolean hint(Runnable advice) {
        try {
            advice.run();
            return true;
        } catch (RuntimeException e) {
            return false;
        }
    }

    /**
     * Reads the pieces' mapped bytes into the page cache with read calls instead of advice (where they are of a tracked
     * mapping), for a run that drops behind: its reads share the disk with its direct writes, and the disk gave a
     * stream of large reads more than many small ones. A 9.3 GB NVFP4 export in 4 GiB on the 16-core GPU machine read
     * in disk requests of 3 MB instead of 0.7-0.9 and took 7.8-9.0 s instead of 8.7-10.1 (three rounds, alternating;
     * the run that fits and syncs: 7.7-8.4); where the run fits, advice did better (36 requests in flight against 28;
     * 7.7-8.4 s against 8.9-9.4).
     */
    private static BiConsumer<List<Piece>, BooleanSupplier> readThrough() {
        MemorySegment scratch = Arena.ofAuto().allocate(READ_STEP, 4096);
        return (pieces, clear) -> {
            for (Piece piece : pieces) {
                if (piece instanceof Piece.Source source && source.tensor() instanceof TensorView view && (view.byteSize() < READ_THROUGH_FROM
                        || !clear.getAsBoolean() || !DropBehind.readThrough(view.data(), scratch, clear))) {
                    NativeIO.advise(view.data(), NativeIO.Advice.WILLNEED);
                }
            }
        };
    }

    private static void advise(List<Piece> pieces) {
        for (Piece piece : pieces) {
            if (piece instanceof Piece.Source source && source.tensor() instanceof TensorView view) {
                NativeIO.advise(view.data(), NativeIO.Advice.WILLNEED);
            }
        }
    }
}
