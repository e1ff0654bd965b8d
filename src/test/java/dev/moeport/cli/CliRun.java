package dev.moeport.cli;

import java.io.PrintWriter;
import java.io.StringWriter;

/** Output, error and exit code of one in-process run of the command line. */
public record CliRun(int code, String out, String err) {
    /** Runs a command that must succeed and returns its {@code --out} folder. */
    public static java.nio.file.Path succeeding(String... args) {
        CliRun r = of(args);
        org.junit.jupiter.api.Assertions.assertEquals(0, r.code(), r.err());
        return java.nio.file.Path.of(args[java.util.Arrays.asList(args).indexOf("--out") + 1]);
    }

    public static CliRun of(String... args) {
        StringWriter out = new StringWriter();
        StringWriter err = new StringWriter();
        int code = Main.run(new PrintWriter(out, true), new PrintWriter(err, true), args);
        return new CliRun(code, out.toString(), err.toString());
    }
}
