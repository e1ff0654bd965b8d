package dev.moeport.exec;

import dev.moeport.io.NativeIO;
import dev.moeport.plan.Job;
import dev.moeport.plan.Piece;
import dev.moeport.tensor.TensorView;
import java.util.List;

/**
 * Asks the kernel to read the mapped inputs of the jobs about to start, a window of bytes ahead of the
 * workers in the order they take jobs. On a cold page cache a mapping's faults read ahead only a little
 * at a time (a 9.3 GB BF16 export on the 16-core GPU machine ran at 48% of cold {@code cat} with the next
 * chunk of each job advised alone, 72% with this window; `benchmarks/scaling-bench`); on a warm one the
 * advice finds the pages present and costs next to nothing. The window bounds what is asked for, so
 * inputs larger than memory do not push out the pages the workers are about to read.
 */
final class ReadAhead {
    /** Bytes of input advised ahead of the newest started job: 256 MB did best of 64, 256 and 1024. */
    static final long WINDOW = 256L << 20;

    private final List<Job> order;
    private int advised;

    ReadAhead(List<Job> order) {
        this.order = order;
    }

    /** Called as job {@code index} of the order starts: advises the jobs after it up to the window. */
    synchronized void starting(int index) {
        long bytes = 0;
        for (int k = index + 1; k < order.size() && bytes < WINDOW; k++) {
            bytes += order.get(k).inputBytes();
            if (k >= advised) {
                advise(order.get(k));
                advised = k + 1;
            }
        }
    }

    private static void advise(Job job) {
        for (Piece piece : job.pieces()) {
            if (piece instanceof Piece.Source source && source.tensor() instanceof TensorView view) {
                NativeIO.advise(view.data(), NativeIO.Advice.WILLNEED);
            }
        }
    }
}
