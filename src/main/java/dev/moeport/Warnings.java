package dev.moeport;

import java.io.PrintWriter;

/**
 * Where library code sends its warnings ("moeport: warning: ..."): the command line's error stream
 * once {@link #to} has set it (standard error until then), or nowhere under {@code --quiet}.
 */
public final class Warnings {
    private static volatile PrintWriter sink = new PrintWriter(System.err, true);

    private Warnings() {}

    /** Sends later warnings to {@code err}, or drops them when {@code err} is null. */
    public static void to(PrintWriter err) {
        sink = err;
    }

    public static void warn(String message) {
        PrintWriter err = sink;
        if (err != null) {
            err.println("moeport: warning: " + message);
            err.flush();
        }
    }
}
