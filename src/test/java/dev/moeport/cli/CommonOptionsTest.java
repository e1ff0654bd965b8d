package dev.moeport.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Path;
import java.util.List;
import java.util.Set;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import picocli.CommandLine;

/** What every command accepts, and the habits of the command line: suggestions, completion. */
class CommonOptionsTest {
    @TempDir
    Path tmp;

    @Test
    void everyCommandTakesQuietVerboseAndTheProgressInterval() {
        Set<String> names = Main.commandLine(new Main()).getSubcommands().keySet();
        assertEquals(Main.COMMANDS.size(), names.size(), names.toString());
        for (String name : names) {
            // as a run builds it: the root with that one command
            CommandLine command = Main.commandLine(new Main(), name).getSubcommands().get(name);
            for (String option : new String[] {"-q", "--quiet", "-v", "--verbose", "--progress-interval"}) {
                assertTrue(command.getCommandSpec().findOption(option) != null, name + " lacks " + option);
            }
        }
    }

    /** A fault in mapped memory that escaped every catch is still one line that says what happened, with the JVM's own error. */
    @Test
    void aFaultInMappedMemoryIsNamedAsSuch() throws Exception {
        Path file = tmp.resolve("cut");
        java.nio.file.Files.write(file, new byte[1 << 16]);
        InternalError fault = null;
        try (java.lang.foreign.Arena arena = java.lang.foreign.Arena.ofConfined();
             java.nio.channels.FileChannel channel = java.nio.channels.FileChannel.open(file, java.nio.file.StandardOpenOption.READ,
                     java.nio.file.StandardOpenOption.WRITE)) {
            java.lang.foreign.MemorySegment mapped = channel.map(java.nio.channels.FileChannel.MapMode.READ_ONLY, 0, 1 << 16, arena);
            channel.truncate(0);
            try {
                mapped.get(java.lang.foreign.ValueLayout.JAVA_BYTE, 4096);
                Thread.sleep(1); // a return from native code: where the JVM raises the fault, if not before
            } catch (InternalError e) {
                fault = e;
            }
        }
        org.junit.jupiter.api.Assumptions.assumeTrue(fault != null, "reading past a shrunk file's end did not fault here");
        String line = Main.describe(fault);
        assertTrue(line.startsWith("a file changed or failed while moeport used it (a fault in mapped memory"), line);
    }

    @Test
    void aRunBuildsOnlyTheCommandItNames() {
        assertEquals(Set.of("export"), Main.commandLine(new Main(), "-q", "--progress-interval", "5", "export", "--in", "x").getSubcommands().keySet());
        assertEquals(Set.of("export"), Main.commandLine(new Main(), "--progress-interval=5", "export").getSubcommands().keySet());
        for (String[] args : new String[][] {{}, {"--help"}, {"exprot"}, {"help", "export"}, {"completion", "bash"}}) {
            assertEquals(Main.COMMANDS.size(), Main.commandLine(new Main(), args).getSubcommands().size(), String.join(" ", args));
        }
    }

    @Test
    void theRootHelpListsEveryCommand() {
        CliRun r = CliRun.of("--help");
        assertEquals(0, r.code(), r.err());
        for (String name : new String[] {"inspect", "export", "import", "verify", "convert", "quantize", "dequantize", "finalize", "check", "synth",
            "demo", "completion", "help"}) {
            assertTrue(r.out().contains("\n  " + name + " "), name + " missing from: " + r.out());
        }
    }

    @Test
    void aMistypedCommandGetsASuggestion() {
        CliRun r = CliRun.of("exprot");
        assertEquals(Main.EXIT_USAGE, r.code());
        assertTrue(r.err().contains("Did you mean") && r.err().contains("export"), r.err());
    }

    @Test
    void theProgressIntervalMustBePositive() {
        CliRun r = CliRun.of("synth", "--preset", "tiny", "--out", tmp.resolve("s").toString(), "--progress-interval", "0");
        assertEquals(Main.EXIT_USAGE, r.code(), r.err());
        assertTrue(r.err().contains("--progress-interval must be a whole number of seconds"), r.err());
    }

    @Test
    void quietAndVerboseWorkAfterTheCommand() {
        CliRun quiet = CliRun.of("synth", "--preset", "tiny", "--out", tmp.resolve("q").toString(), "-q");
        assertEquals(0, quiet.code(), quiet.err());
        assertEquals("", quiet.err());
        CliRun verbose = CliRun.of("inspect", tmp.resolve("missing").toString(), "-v");
        assertEquals(Main.EXIT_FAILURE, verbose.code());
        assertTrue(verbose.err().lines().count() > 1 && verbose.err().contains("\tat "), "a stack trace with -v: " + verbose.err());
        CliRun plain = CliRun.of("inspect", tmp.resolve("missing").toString());
        assertEquals(1, plain.err().lines().count(), plain.err());
    }

    @Test
    void completionPrintsAScriptForBashAndZsh() {
        for (String shell : new String[] {"bash", "zsh"}) {
            CliRun r = CliRun.of("completion", shell);
            assertEquals(0, r.code(), r.err());
            assertTrue(r.out().contains("complete -F _complete_moeport") && r.out().contains("export") && r.out().contains("bashcompinit"), r.out());
        }
        assertEquals(Main.EXIT_USAGE, CliRun.of("completion", "fish").code());
        assertFalse(CliRun.of("completion", "fish").err().contains("\tat "));
    }

    @Test
    void versionNamesTheKernelAndTheRuntime() {
        CliRun r = CliRun.of("--version");
        assertEquals(0, r.code(), r.err());
        List<String> lines = r.out().lines().toList();
        // Surefire runs the tests with the Vector API module: the SIMD kernel, with its width.
        assertTrue(lines.get(1).matches("kernel: Vector API, (256|512)-bit vectors \\((8|16) floats\\)"), r.out());
        assertTrue(lines.get(2).startsWith("runtime: Java " + Runtime.version()), r.out());
    }
}
