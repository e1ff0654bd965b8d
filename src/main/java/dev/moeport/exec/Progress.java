package dev.moeport.exec;

import dev.moeport.io.NativeIO;
import dev.moeport.util.Sizes;
import java.io.PrintWriter;
import java.time.Duration;
import java.util.Locale;
import java.util.concurrent.Executors;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicLong;

/**
 * Counts bytes read and tensors written while a plan runs, and shows it: on a terminal, one status
 * line redrawn a few times a second, fitted to the terminal's width (bar, %, bytes, tensors, rate,
 * ETA); elsewhere (a log file, a pipe, a batch job's output), one plain line every interval, so that
 * logs show life without filling with redrawn frames. Thread-safe.
 */
public final class Progress implements AutoCloseable {
    /** The longest bar; it shrinks, then goes, on narrow terminals. */
    private static final int BAR_WIDTH = 24;
    private static final int MIN_BAR_WIDTH = 8;
    private static final long REDRAW_MILLIS = 250;

    /**
     * How progress is shown on {@code err}: redrawn on a terminal {@code columns} wide, or (when
     * {@code columns} is 0) a plain line every {@code interval}.
     */
    public record Display(PrintWriter err, int columns, Duration interval) {
        public static final Duration DEFAULT_INTERVAL = Duration.ofSeconds(30);

        /** The display for the process's standard error: a terminal (isatty(2)) or not. */
        public static Display forStderr(PrintWriter err, Duration interval) {
            String term = System.getenv("TERM");
            boolean terminal = NativeIO.isTerminal(2) && term != null && !"dumb".equals(term);
            return new Display(err, terminal ? terminalWidth() : 0, interval);
        }

        /** COLUMNS when set (shells export it to children only sometimes), else the terminal's own width. */
        private static int terminalWidth() {
            try {
                int columns = Integer.parseInt(System.getenv().getOrDefault("COLUMNS", "").trim());
                if (columns > 0) {
                    return columns;
                }
            } catch (NumberFormatException e) {
                // not a number: ask the terminal
            }
            int columns = NativeIO.terminalColumns(2);
            return columns > 0 ? columns : 80;
        }

        boolean terminal() {
            return columns > 0;
        }
    }

    private final long totalBytes;
    private final int totalTensors;
    private final AtomicLong bytes = new AtomicLong();
    private final AtomicLong tensors = new AtomicLong();
    private final long startNanos = System.nanoTime();
    private final Display display;
    private final ScheduledExecutorService ticker;
    private int drawnLength;

    /** @param display where and how to show progress, or null to show nothing */
    public Progress(long totalBytes, int totalTensors, Display display) {
        this.totalBytes = totalBytes;
        this.totalTensors = totalTensors;
        this.display = display;
        if (display != null) {
            ticker = Executors.newSingleThreadScheduledExecutor(r -> {
                Thread t = new Thread(r, "moeport-progress");
                t.setDaemon(true);
                return t;
            });
            long period = display.terminal() ? REDRAW_MILLIS : Math.max(1, display.interval().toMillis());
            ticker.scheduleAtFixedRate(this::draw, display.terminal() ? 200 : period, period, TimeUnit.MILLISECONDS);
        } else {
            ticker = null;
        }
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

    /** The figures now. */
    Snapshot snapshot() {
        return new Snapshot(bytes.get(), totalBytes, tensors.get(), totalTensors, rate());
    }

    private synchronized void draw() {
        Snapshot now = snapshot();
        if (display.terminal()) {
            String line = now.terminalLine(display.columns());
            // Pad over what is left of a longer previous frame.
            display.err().print("\r" + line + " ".repeat(Math.max(0, drawnLength - line.length())));
            drawnLength = line.length();
        } else {
            display.err().println(now.logLine());
        }
        display.err().flush();
    }

    /** The figures of one moment, and the lines that show them. */
    record Snapshot(long done, long total, long tensors, int totalTensors, double rate) {
        double fraction() {
            return total == 0 ? 1 : Math.min(1, (double) done / total);
        }

        String eta() {
            return rate <= 0 ? "--:--" : clock((long) (Math.max(0, total - done) / rate));
        }

        /** One plain line for logs: {@code moeport: 42% 1.2 GB / 2.9 GB, 10/24 tensors, 512 MB/s, ETA 00:03}. */
        String logLine() {
            return String.format(Locale.ROOT, "moeport: %.0f%% %s / %s, %d/%d tensors, %s, ETA %s", fraction() * 100,
                    Sizes.format(done), Sizes.format(total), tensors, totalTensors, Sizes.rate(rate), eta());
        }

        /**
         * The status line at most {@code columns - 1} characters wide (the last column would wrap on
         * some terminals): the bar shrinks, then the tensor count and the bar go, then the line is cut.
         */
        String terminalLine(int columns) {
            int room = Math.max(1, columns - 1);
            String figures = String.format(Locale.ROOT, "%3.0f%%  %s / %s  %s  ETA %s", fraction() * 100,
                    Sizes.format(done), Sizes.format(total), Sizes.rate(rate), eta());
            String withTensors = String.format(Locale.ROOT, "%3.0f%%  %s / %s  %d/%d tensors  %s  ETA %s", fraction() * 100,
                    Sizes.format(done), Sizes.format(total), tensors, totalTensors, Sizes.rate(rate), eta());
            for (String text : new String[] {withTensors, figures}) {
                int bar = Math.min(BAR_WIDTH, room - text.length() - 3);
                if (bar >= MIN_BAR_WIDTH) {
                    int filled = (int) Math.round(fraction() * bar);
                    return "[" + "=".repeat(filled) + " ".repeat(bar - filled) + "] " + text;
                }
            }
            return figures.length() <= room ? figures : figures.substring(0, room);
        }
    }

    /** {@code 1:02:03} or {@code 02:03}. */
    public static String clock(long seconds) {
        long h = seconds / 3600;
        long m = seconds / 60 % 60;
        long s = seconds % 60;
        return h > 0 ? String.format(Locale.ROOT, "%d:%02d:%02d", h, m, s) : String.format(Locale.ROOT, "%02d:%02d", m, s);
    }

    /** Stops showing progress and clears the terminal's status line. */
    @Override
    public void close() {
        if (ticker != null) {
            ticker.shutdownNow();
            if (display.terminal()) {
                synchronized (this) {
                    display.err().print("\r" + " ".repeat(drawnLength) + "\r");
                    display.err().flush();
                }
            }
        }
    }
}
