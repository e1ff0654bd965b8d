package dev.moeport.exec;

import static org.junit.jupiter.api.Assertions.assertEquals;

import java.util.List;
import org.junit.jupiter.api.Test;

/** Tasks start largest first, and tasks of one size from the output files in turn, a window of files per thread count. */
class StartOrderTest {
    /** A task: the output file it writes and its input bytes. */
    record T(String name, int file, long bytes) {}

    private static List<String> order(List<T> tasks, int threads) {
        return Executor.startOrder(tasks, T::file, T::bytes, threads).stream().map(T::name).toList();
    }

    @Test
    void expertsOfTwoFilesAlternateBetweenThem() {
        // as a model lays them out: file 0 holds a0..a2, file 1 b0..b2, all of one size, and a larger embedding in file 1
        List<T> tasks = List.of(new T("a0", 0, 10), new T("a1", 0, 10), new T("a2", 0, 10),
                new T("b0", 1, 10), new T("b1", 1, 10), new T("b2", 1, 10), new T("embed", 1, 50));
        assertEquals(List.of("embed", "a0", "b0", "a1", "b1", "a2", "b2"), order(tasks, 16));
    }

    @Test
    void filesAreTakenAWindowOfThreadsAtATime() {
        // four files, two threads: files 0 and 1 first (largest first within them), then files 2 and 3
        List<T> tasks = List.of(new T("a0", 0, 10), new T("a1", 0, 10), new T("b0", 1, 10), new T("b1", 1, 30),
                new T("c0", 2, 10), new T("c1", 2, 10), new T("d0", 3, 99), new T("d1", 3, 10));
        assertEquals(List.of("b1", "a0", "b0", "a1", "d0", "c0", "d1", "c1"), order(tasks, 2));
        // one thread: one file after the other, largest first in each
        assertEquals(List.of("a0", "a1", "b1", "b0", "c0", "c1", "d0", "d1"), order(tasks, 1));
    }

    @Test
    void aPartsFilesMakeItsWindows() {
        // a part of a plan writing files 14 to 17 of a layout: with four threads, all four at once
        List<T> tasks = List.of(new T("n0", 14, 10), new T("n1", 14, 10), new T("o0", 15, 10), new T("p0", 16, 10),
                new T("q0", 17, 10), new T("q1", 17, 10));
        assertEquals(List.of("n0", "o0", "p0", "q0", "n1", "q1"), order(tasks, 4));
    }
}
