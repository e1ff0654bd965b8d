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
