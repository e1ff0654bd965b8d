package dev.moeport.exec;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.PrintWriter;
import java.io.StringWriter;
import java.time.Duration;
import org.junit.jupiter.api.Test;

class ProgressTest {
    // 1.5 GB of 6 GB done at 250 MB/s: 25%, and 4.5 GB left take 18 s.
    private final Progress.Snapshot quarter = new Progress.Snapshot(1_500_000_000L, 6_000_000_000L, 30, 120, 250e6);

    @Test
    void logLineHasPercentBytesRateAndEta() {
        assertEquals("moeport: 25% 1.50 GB / 6.00 GB, 30/120 tensors, 250 MB/s, ETA 00:18", quarter.logLine());
    }

    @Test
    void etaIsUnknownBeforeAnyByte() {
        assertTrue(new Progress.Snapshot(0, 100, 0, 1, 0).logLine().endsWith("ETA --:--"));
    }

    @Test
    void terminalLineFitsEveryWidthAndKeepsTheFiguresWhileTheyFit() {
        for (int columns = 10; columns <= 200; columns++) {
            String line = quarter.terminalLine(columns);
            assertTrue(line.length() <= columns - 1, columns + " columns: " + line);
            if (columns >= 50) {
                assertTrue(line.contains(" 25%  1.50 GB / 6.00 GB") && line.endsWith("250 MB/s  ETA 00:18"), columns + " columns: " + line);
            }
        }
        // 80 columns: the full bar (24), a quarter filled, and the tensor count.
        assertEquals("[======                  ]  25%  1.50 GB / 6.00 GB  30/120 tensors  250 MB/s  ETA 00:18", quarter.terminalLine(100));
        assertTrue(quarter.terminalLine(80).contains("30/120 tensors"), quarter.terminalLine(80));
        assertFalse(quarter.terminalLine(50).contains("tensors"), quarter.terminalLine(50));
    }

    @Test
    void standardErrorOfTheTestJvmIsNoTerminal() {
        // Surefire pipes the forked JVM's standard error: progress must fall back to plain lines.
        assertEquals(0, Progress.Display.forStderr(new PrintWriter(new StringWriter()), Duration.ofSeconds(30)).columns());
    }

    @Test
    void outsideATerminalPrintsPlainLinesAtTheInterval() throws InterruptedException {
        StringWriter log = new StringWriter();
        try (Progress progress = new Progress(1000, 2, new Progress.Display(new PrintWriter(log), 0, Duration.ofMillis(5)))) {
            progress.addBytes(500);
            progress.addTensors(1);
            // The reporter runs on its own: a line may come before the counts above are added; wait for one after.
            for (int wait = 0; wait < 2000 && !log.toString().contains("1/2 tensors"); wait++) {
                Thread.sleep(5);
            }
        }
        String line = log.toString().lines().filter(l -> l.contains("1/2 tensors")).findFirst().orElseThrow(() -> new AssertionError(log));
        assertTrue(line.startsWith("moeport: 50% 500 B / 1.00 kB, 1/2 tensors, "), line);
        assertFalse(log.toString().contains("\r"), "no carriage returns in a log");
    }
}
