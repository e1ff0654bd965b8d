package dev.moeport.cli;

import java.io.PrintWriter;
import java.io.StringWriter;

/** Output, error and exit code of one in-process run of the command line. */
public record CliRun(int code, String out, String err) {
    public static CliRun of(String... args) {
        StringWriter out = new StringWriter();
        StringWriter err = new StringWriter();
        int code = Main.run(new PrintWriter(out, true), new PrintWriter(err, true), args);
        return new CliRun(code, out.toString(), err.toString());
    }
}
