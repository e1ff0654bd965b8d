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
    /** {@code upTo[k]}: the input bytes of jobs {@code [0, k)} of the order. */
    private final long[] upTo;
    private int advised;

    ReadAhead(List<Job> order) {
        this.order = order;
        this.upTo = new long[order.size() + 1];
        for (int k = 0; k < order.size(); k++) {
            upTo[k + 1] = upTo[k] + order.get(k).inputBytes();
        }
    }

    /**
     * Called as job {@code index} of the order starts: advises the jobs after it that begin within the window. Each
     * job is advised once, so a run's calls cost time in proportion to its jobs, however small they are.
     */
    synchronized void starting(int index) {
        long limit = upTo[index + 1] + WINDOW;
        advised = Math.max(advised, index + 1);
        while (advised < order.size() && upTo[advised] < limit) {
            advise(order.get(advised));
            advised++;
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
