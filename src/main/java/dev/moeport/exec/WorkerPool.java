package dev.moeport.exec;

import dev.moeport.MoeportException;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.CancellationException;
import java.util.concurrent.CompletionException;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorCompletionService;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.TimeUnit;

/**
 * Runs tasks on a fixed number of threads, each thread with its own {@link Scratch}. The first failure
 * stops the run: the other tasks are interrupted (long ones check {@link #checkCancelled()} between
 * chunks), and the call returns only once every thread has stopped, so no task outlives the memory,
 * mappings and files it works on.
 */
public final class WorkerPool {
    private WorkerPool() {}

    /** One unit of work, given its thread's scratch memory. */
    @FunctionalInterface
    public interface Task<T> {
        T run(Scratch scratch);
    }

    /** Runs every task and returns their results in task order; rethrows the first failure. */
    public static <T> List<T> run(int threads, String name, List<? extends Task<T>> tasks) {
        ExecutorService pool = Executors.newFixedThreadPool(Math.max(1, threads), r -> {
            Thread t = new Thread(r, name);
            t.setDaemon(true);
            return t;
        });
        List<Scratch> scratches = new ArrayList<>();
        ThreadLocal<Scratch> local = ThreadLocal.withInitial(() -> {
            Scratch s = new Scratch();
            synchronized (scratches) {
                scratches.add(s);
            }
            return s;
        });
        ExecutorCompletionService<T> completion = new ExecutorCompletionService<>(pool);
        List<Future<T>> futures = new ArrayList<>();
        for (Task<T> task : tasks) {
            futures.add(completion.submit(() -> task.run(local.get())));
        }
        Throwable failure = null;
        try {
            for (int done = 0; done < futures.size() && failure == null; done++) {
                try {
                    completion.take().get();
                } catch (ExecutionException e) {
                    failure = e.getCause();
                }
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            failure = new MoeportException("interrupted");
        } finally {
            pool.shutdownNow();
            try {
                while (!pool.awaitTermination(10, TimeUnit.SECONDS)) {
                    pool.shutdownNow();
                }
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
            synchronized (scratches) {
                scratches.forEach(Scratch::close);
            }
        }
        if (failure != null) {
            throw unwrap(failure);
        }
        List<T> results = new ArrayList<>();
        for (Future<T> f : futures) {
            results.add(f.resultNow());
        }
        return results;
    }

    /** Stops a task of a run that failed elsewhere: call between chunks of long work. */
    public static void checkCancelled() {
        if (Thread.currentThread().isInterrupted()) {
            throw new CancellationException("another task failed");
        }
    }

    /** The failure itself, out of the wrappers of futures. */
    public static RuntimeException unwrap(Throwable t) {
        while ((t instanceof CompletionException || t instanceof ExecutionException) && t.getCause() != null) {
            t = t.getCause();
        }
        if (t instanceof RuntimeException re) {
            return re;
        }
        if (t instanceof Error e) {
            throw e;
        }
        return new IllegalStateException(t);
    }
}
