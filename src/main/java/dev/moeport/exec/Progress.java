package dev.moeport.exec;

import dev.moeport.util.Sizes;
import java.io.PrintWriter;
import java.time.Duration;
import java.util.Locale;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;

/**
 * Counts bytes read and tensors written while a plan runs, and on a terminal redraws one status line
 * a few times a second: bar, bytes, tensors, rate, ETA. Thread-safe.
 */
public final class Progress implements AutoCloseable {
    private static final int BAR_WIDTH = 24;

    private final long totalBytes;
    private final int totalTensors;
    private final AtomicLong bytes = new AtomicLong();
    private final AtomicLong tensors = new AtomicLong();
    private final long startNanos = System.nanoTime();
    private final PrintWriter terminal;
    private final ScheduledExecutorService ticker;

    /** @param terminal where to draw the bar, or null for no bar */
    public Progress(long totalBytes, int totalTensors, PrintWriter terminal) {
        this.totalBytes = totalBytes;
        this.totalTensors = totalTensors;
        this.terminal = terminal;
        if (terminal != null) {
            ticker = Executors.newSingleThreadScheduledExecutor(r -> {
                Thread t = new Thread(r, "moeport-progress");
                t.setDaemon(true);
                return t;
            });
            ticker.scheduleAtFixedRate(this::draw, 200, 250, TimeUnit.MILLISECONDS);
        } else {
            ticker = null;
        }
    }

    /** Whether standard error is an interactive terminal (where a redrawn bar makes sense). */
    public static boolean stderrIsTerminal() {
        java.io.Console console = System.console();
        return console != null && console.isTerminal() && System.getenv("TERM") != null && !"dumb".equals(System.getenv("TERM"));
    }

    public void addBytes(long n) {
        bytes.addAndGet(n);
    }

    public void addTensors(int n) {
        tensors.addAndGet(n);
    }

    public Duration elapsed() {
        return Duration.ofNanos(System.nanoTime() - startNanos);
    }

    /** Bytes of input per second so far. */
    public double rate() {
        double seconds = (System.nanoTime() - startNanos) / 1e9;
        return seconds <= 0 ? 0 : bytes.get() / seconds;
    }

    private synchronized void draw() {
        long done = bytes.get();
        double fraction = totalBytes == 0 ? 1 : Math.min(1, (double) done / totalBytes);
        int filled = (int) Math.round(fraction * BAR_WIDTH);
        double rate = rate();
        String eta = rate <= 0 ? "--:--" : clock((long) ((totalBytes - done) / rate));
        String line = String.format(Locale.ROOT, "\r[%s%s] %3.0f%%  %s / %s  %d/%d tensors  %s  ETA %s ",
                "=".repeat(filled), " ".repeat(BAR_WIDTH - filled), fraction * 100, Sizes.format(done), Sizes.format(totalBytes),
                tensors.get(), totalTensors, Sizes.rate(rate), eta);
        terminal.print(line);
        terminal.flush();
    }

    /** {@code 1:02:03} or {@code 02:03}. */
    public static String clock(long seconds) {
        long h = seconds / 3600;
        long m = seconds / 60 % 60;
        long s = seconds % 60;
        return h > 0 ? String.format(Locale.ROOT, "%d:%02d:%02d", h, m, s) : String.format(Locale.ROOT, "%02d:%02d", m, s);
    }

    /** Stops redrawing and clears the bar's line. */
    @Override
    public void close() {
        if (ticker != null) {
            ticker.shutdownNow();
            synchronized (this) {
                terminal.print("\r" + " ".repeat(100) + "\r");
                terminal.flush();
            }
        }
    }
}
