package dev.moeport.exec;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTimeoutPreemptively;

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;
import org.junit.jupiter.api.Test;

/**
 * The read-ahead thread asks for the jobs in order, never beyond its window past the newest started job; advice is a
 * hint, and a failure of it ends the read-ahead, not the run.
 */
class ReadAheadTest {
    private final BlockingQueue<String> advised = new LinkedBlockingQueue<>();

    /** Five jobs of 100 bytes, a window of 250. */
    private ReadAhead<String> readAhead() {
        return new ReadAhead<>(List.of("j0", "j1", "j2", "j3", "j4"), job -> 100, 250, 0, (job, ahead) -> advised.add(job));
    }

    /** The next {@code n} jobs advised (waiting for them), then none more for a while. */
    private List<String> next(int n) throws InterruptedException {
        List<String> jobs = new ArrayList<>();
        for (int k = 0; k < n; k++) {
            String job = advised.poll(10, TimeUnit.SECONDS);
            if (job == null) {
                break;
            }
            jobs.add(job);
        }
        assertNull(advised.poll(200, TimeUnit.MILLISECONDS), "advised beyond the window");
        return jobs;
    }

    @Test
    void advisesTheFirstWindowBeforeAnyJobStartsThenMovesWithTheJobs() throws InterruptedException {
        try (ReadAhead<String> readAhead = readAhead()) {
            // jobs beginning before byte 250: j0 (0), j1 (100), j2 (200)
            assertEquals(List.of("j0", "j1", "j2"), next(3));
            readAhead.starting(0); // window now ends at 100 + 250
            assertEquals(List.of("j3"), next(1));
            readAhead.starting(1); // 450: j4 begins at 400
            assertEquals(List.of("j4"), next(1));
        }
    }

    @Test
    void jobsStartedOutOfOrderMoveTheWindowToTheFurthest() throws InterruptedException {
        try (ReadAhead<String> readAhead = readAhead()) {
            assertEquals(List.of("j0", "j1", "j2"), next(3));
            readAhead.starting(2);
            readAhead.starting(0); // an earlier job starting later does not move the window back
            assertEquals(List.of("j3", "j4"), next(2));
        }
    }

    /**
     * A job whose worker started it before the thread reached it is not advised: a run that drops behind would read it
     * twice. Advice under way sees its job start (a long read of it stops).
     */
    @Test
    void jobsStartedBeforeTheirAdviceAreSkippedAndAdviceUnderWaySeesItsJobStart() throws InterruptedException {
        java.util.concurrent.CountDownLatch held = new java.util.concurrent.CountDownLatch(1);
        List<Boolean> aheadOfJ0 = new java.util.concurrent.CopyOnWriteArrayList<>();
        try (ReadAhead<String> readAhead = new ReadAhead<>(List.of("j0", "j1", "j2", "j3", "j4"), job -> 100, 250, 0, (job, ahead) -> {
            if (job.equals("j0")) {
                aheadOfJ0.add(ahead.getAsBoolean());
            }
            advised.add(job);
            if (job.equals("j0")) {
                try {
                    held.await();
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                }
                aheadOfJ0.add(ahead.getAsBoolean());
            }
        })) {
            assertEquals("j0", advised.poll(10, TimeUnit.SECONDS));
            readAhead.starting(2); // j0 to j2 started while the thread was busy with j0's advice
            held.countDown();
            assertEquals(List.of("j3", "j4"), next(2));
            assertEquals(List.of(true, false), aheadOfJ0);
        }
    }

    /** With a clearance, a job is clear while it begins that many bytes or more beyond the newest started job's start. */
    @Test
    void aJobIsClearWhileItBeginsTheClearanceBeyondTheNewestStarted() throws InterruptedException {
        List<Boolean> clear = new java.util.concurrent.CopyOnWriteArrayList<>();
        try (ReadAhead<String> readAhead = new ReadAhead<>(List.of("j0", "j1", "j2", "j3", "j4"), job -> 100, 250, 150, (job, isClear) -> {
            clear.add(isClear.getAsBoolean());
            advised.add(job);
        })) {
            assertEquals(List.of("j0", "j1", "j2"), next(3)); // beginning at 0, 100, 200: clear from 150
            readAhead.starting(0); // j0 started: j1 begins at 100, j3 at 300, clear from 250
            assertEquals(List.of("j3"), next(1));
            assertEquals(List.of(false, false, true, true), clear);
        }
    }

    @Test
    void closingStopsTheThreadWithJobsLeft() throws InterruptedException {
        ReadAhead<String> readAhead = readAhead();
        assertEquals(List.of("j0", "j1", "j2"), next(3));
        assertTimeoutPreemptively(Duration.ofSeconds(10), readAhead::close);
        readAhead.starting(4);
        assertNull(advised.poll(200, TimeUnit.MILLISECONDS), "advised after close");
    }

    @Test
    void adviceThatFailsStopsTheReadAheadAndNothingElse() throws InterruptedException {
        ReadAhead<String> readAhead = new ReadAhead<>(List.of("j0", "j1", "j2"), job -> 100, 1000, 0, (job, ahead) -> {
            if (job.equals("j1")) {
                throw new IllegalStateException("madvise failed");
            }
            advised.add(job);
        });
        assertEquals(List.of("j0"), next(1)); // not j2: the thread stopped at j1
        assertTimeoutPreemptively(Duration.ofSeconds(10), readAhead::close);
    }
}
