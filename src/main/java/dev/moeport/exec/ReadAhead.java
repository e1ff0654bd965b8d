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
import java.util.function.Consumer;
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

    /** Bytes of a read call of {@link #readThrough}: twice Linux's largest read-ahead window by default (8 MB, as on the GPU machine). */
    private static final long READ_STEP = 16L << 20;

    /** Bytes the read-ahead while planning asks for between looks at whether to stop: a chunk's. */
    private static final long PLANNING_STEP = PieceReader.CHUNK_BYTES;

    private final List<T> order;
    /** {@code upTo[k]}: the input bytes of jobs {@code [0, k)} of the order. */
    private final long[] upTo;
    private final long window;
    private final Consumer<T> advise;
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
        return new ReadAhead<>(order, bytes, WINDOW, dropBehind ? readThrough() : ReadAhead::advise);
    }

    /** Calls {@code advise} on each of {@code order} in turn, from its first, while it begins within {@code window} bytes of the newest started. */
    ReadAhead(List<T> order, ToLongFunction<T> bytes, long window, Consumer<T> advise) {
        this.order = order;
        this.window = window;
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
            if (!hint(() -> advise.accept(job))) {
                return;
            }
        }
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
     * in disk requests of 3 MB instead of 0.7-0.9 and took 7.8-9.0 s instead of 8.7-10.1 (the run that fits and syncs:
     * 7.7-8.4); where the run fits, advice did better (36 requests in flight against 28; 7.7-8.4 s against 8.9-9.4).
     */
    private static Consumer<List<Piece>> readThrough() {
        MemorySegment scratch = Arena.ofAuto().allocate(READ_STEP, 4096);
        return pieces -> {
            for (Piece piece : pieces) {
                if (piece instanceof Piece.Source source && source.tensor() instanceof TensorView view
                        && !DropBehind.readThrough(view.data(), scratch)) {
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
