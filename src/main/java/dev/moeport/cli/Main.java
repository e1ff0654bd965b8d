package dev.moeport.cli;

import dev.moeport.MoeportException;
import java.io.IOException;
import java.io.InputStream;
import java.io.PrintWriter;
import java.util.List;
import java.util.Properties;
import java.util.Set;
import dev.moeport.Warnings;
import dev.moeport.exec.Progress;
import dev.moeport.quant.QuantKernels;
import dev.moeport.util.Names;
import java.time.Duration;
import picocli.CommandLine.Command;
import picocli.CommandLine.Option;
import picocli.CommandLine.ScopeType;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Spec;
import picocli.CommandLine;

/**
 * The {@code moeport} command. Exit codes: 0 success, 1 a failure of the input or the run (one line on
 * stderr naming the file and tensor), 2 a usage error. {@code MOEPORT_DEBUG=1} adds stack traces.
 */
@Command(
        name = "moeport",
        mixinStandardHelpOptions = true,
        versionProvider = Main.Version.class,
        sortOptions = false,
        usageHelpAutoWidth = true,
        description = {
            "Converts Mixture-of-Experts checkpoints between Megatron-Core and Hugging Face layouts, and " +
                "quantizes them, streaming on CPUs: tensors are read zero-copy from memory-mapped files and never" +
                " held in the heap.",
            ""
        },
        commandListHeading = "%nCommands:%n",
        footerHeading = "%n",
        footer = {
            "Exit codes: 0 success, 1 failure of the input or the run, 2 usage error (verify: 3 the checkpoints differ).",
            "Run 'moeport COMMAND --help' for a command's options. Sizes are decimal (5GB = 5,000,000,000 bytes)."
        })
public final class Main implements Runnable {
    public static final int EXIT_FAILURE = 1;
    public static final int EXIT_USAGE = 2;

    /** The commands, in the order the help lists them. */
    static final List<Class<?>> COMMANDS = List.of(InspectCommand.class, ExportCommand.class, ImportCommand.class, VerifyCommand.class,
            ConvertCommand.class, QuantizeCommand.class, DequantizeCommand.class, FinalizeCommand.class, CheckCommand.class, SynthCommand.class,
            DemoCommand.class, CompletionCommand.class, CommandLine.HelpCommand.class);

    /** Commands that read the other commands' models: the help and the completion script. */
    private static final Set<String> SEE_ALL_COMMANDS = Set.of("help", "completion");

    /**
     * The command line for {@code args}: the root with only the command they name, or with every command where they name
     * none (the root's help, a mistyped command that gets a suggestion) or one that reads the others. picocli builds
     * a command's model from its annotations by reflection; building all of them took a tenth of a second of every run.
     */
    static CommandLine commandLine(Main main, String... args) {
        CommandLine cli = new CommandLine(main);
        String named = commandNamed(args);
        boolean all = named == null || SEE_ALL_COMMANDS.contains(named) || COMMANDS.stream().noneMatch(c -> name(c).equals(named));
        for (Class<?> command : COMMANDS) {
            if (all || name(command).equals(named)) {
                cli.addSubcommand(command);
            }
        }
        return cli;
    }

    private static String name(Class<?> command) {
        return command.getAnnotation(Command.class).name();
    }

    /** The command {@code args} run: their first argument that is not one of the root's options or its value. */
    private static String commandNamed(String... args) {
        for (int i = 0; i < args.length; i++) {
            if (args[i].equals("--progress-interval")) {
                i++;
            } else if (!args[i].startsWith("-")) {
                return args[i];
            }
        }
        return null;
    }

    @Spec
    CommandSpec spec;

    // Options every command takes (picocli copies them to the subcommands); read through settings().
    @Option(names = {"-q", "--quiet"}, scope = ScopeType.INHERIT,
            description = "No progress and no warnings: only results and errors.")
    boolean quiet;

    @Option(names = {"-v", "--verbose"}, scope = ScopeType.INHERIT,
            description = "Errors with their stack trace (as MOEPORT_DEBUG=1).")
    boolean verbose;

    @Option(names = "--progress-interval", paramLabel = "SECONDS", scope = ScopeType.INHERIT,
            description = "Where stderr is not a terminal (a log, a pipe), a progress line every SECONDS "
                    + "(default 30; also MOEPORT_PROGRESS_INTERVAL).")
    Integer progressInterval;

    /**
     * How the running command shows progress on its error stream, or null for none: with
     * {@code off} (--no-progress, --json), -q or MOEPORT_NO_PROGRESS set to anything but 0.
     */
    static Progress.Display progress(CommandSpec command, boolean off) {
        Main main = (Main) command.root().userObject();
        String disabled = System.getenv("MOEPORT_NO_PROGRESS");
        if (off || main.quiet || (disabled != null && !disabled.isEmpty() && !"0".equals(disabled))) {
            return null;
        }
        return Progress.Display.forStderr(command.commandLine().getErr(), Duration.ofSeconds(main.progressIntervalSeconds(command)));
    }

    private int progressIntervalSeconds(CommandSpec command) {
        String source = "--progress-interval";
        Integer seconds = progressInterval;
        if (seconds == null && System.getenv("MOEPORT_PROGRESS_INTERVAL") != null) {
            source = "MOEPORT_PROGRESS_INTERVAL";
            try {
                seconds = Integer.valueOf(System.getenv("MOEPORT_PROGRESS_INTERVAL").trim());
            } catch (NumberFormatException e) {
                seconds = 0;
            }
        }
        if (seconds == null) {
            return (int) Progress.Display.DEFAULT_INTERVAL.toSeconds();
        }
        if (seconds < 1) {
            throw new CommandLine.ParameterException(command.commandLine(), source + " must be a whole number of seconds, 1 or more");
        }
        return seconds;
    }

    @Override
    public void run() {
        throw new CommandLine.ParameterException(spec.commandLine(), "missing command");
    }

    public static void main(String[] args) {
        preloadInBackground();
        int code;
        try {
            code = run(new PrintWriter(System.out, true), new PrintWriter(System.err, true), args);
        } catch (Throwable t) {
            // Errors (out of memory, a fault in mapped memory) escape picocli's handler: still one line.
            System.err.println("moeport: error: " + describe(t));
            if (debug()) {
                t.printStackTrace();
            }
            code = EXIT_FAILURE;
        }
        System.exit(code);
    }

    /** The thread that sets up slow classes while the command line is parsed, when main started one. */
    private static volatile Thread preload;

    /**
     * Initializes, on a thread of its own, the classes that take long to set up and that most runs need: the native
     * bindings, the Vector API kernel, Jackson's mapper. A tenth of a second each, they ran one after the other on the
     * main thread before a run's first byte; now while picocli builds and parses the command line.
     */
    private static void preloadInBackground() {
        Thread thread = new Thread(() -> {
            try {
                for (String name : new String[] {"dev.moeport.io.NativeIO", "dev.moeport.cli.Json", "dev.moeport.format.safetensors.SafetensorsHeader"}) {
                    Class.forName(name, true, Main.class.getClassLoader());
                }
                QuantKernels.get();
            } catch (Throwable e) {
                // the main thread meets the same failure (a bad -Dmoeport.kernel, say) and reports it in one line
            }
        }, "moeport-preload");
        thread.setDaemon(true);
        preload = thread;
        thread.start();
    }

    /**
     * Waits for the preload before a command runs: two threads initializing one library's classes at once can wait on
     * each other forever where their static initializers refer to each other, so only picocli's work overlaps it.
     */
    private static void awaitPreload() {
        Thread thread = preload;
        if (thread != null) {
            try {
                thread.join();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
        }
    }

    /** Runs the command line with the given streams and returns the exit code; for tests and embedding. */
    public static int run(PrintWriter out, PrintWriter err, String... args) {
        Main main = new Main();
        CommandLine cli = commandLine(main, args);
        cli.setUsageHelpAutoWidth(true);
        cli.getSubcommands().values().forEach(c -> c.getCommandSpec().versionProvider(new Version()));
        cli.setOut(out);
        cli.setErr(err);
        boolean json = java.util.Arrays.asList(args).contains("--json");
        cli.setExecutionExceptionHandler((e, commandLine, parseResult) -> {
            if (json) {
                Json.printError(commandLine.getOut(), EXIT_FAILURE, describe(e));
            }
            commandLine.getErr().println("moeport: error: " + describe(e));
            if (debug() || main.verbose) {
                e.printStackTrace(commandLine.getErr());
            }
            commandLine.getErr().flush();
            return EXIT_FAILURE;
        });
        cli.setParameterExceptionHandler((e, args2) -> {
            awaitPreload();
            CommandLine c = e.getCommandLine();
            if (json) {
                Json.command(c.getCommandName());
                Json.printError(c.getOut(), EXIT_USAGE, oneLine(e.getMessage()));
            }
            c.getErr().println("moeport: " + e.getMessage());
            if (e instanceof CommandLine.UnmatchedArgumentException unmatched) {
                CommandLine.UnmatchedArgumentException.printSuggestions(unmatched, c.getErr());
            }
            c.getErr().println("Try '" + c.getCommandSpec().qualifiedName() + " --help' for more information.");
            c.getErr().flush();
            return EXIT_USAGE;
        });
        // Warnings go where errors go; -q is known only once the arguments are parsed.
        Warnings.to(err);
        cli.setExecutionStrategy(parseResult -> {
            awaitPreload();
            Json.command(parseResult.asCommandLineList().getLast().getCommandName());
            if (main.quiet) {
                Warnings.to(null);
            }
            return new CommandLine.RunLast().execute(parseResult);
        });
        return cli.execute(args);
    }

    static String describe(Throwable t) {
        if (t instanceof MoeportException) {
            return oneLine(t.getMessage());
        }
        if (t instanceof InternalError && String.valueOf(t.getMessage()).contains("unsafe memory access")) {
            // The JVM's word for a fault in mapped memory that no copy caught (io/MappedMemory catches those of copies).
            return "a file changed or failed while moeport used it (a fault in mapped memory: an input rewritten or cut short while read,"
                    + " a full disk or an I/O error)";
        }
        if (t instanceof OutOfMemoryError) {
            long heapMiB = Runtime.getRuntime().maxMemory() >> 20;
            return "out of memory (" + oneLine(t.getMessage()) + ") with a Java heap of " + heapMiB + " MiB: raise it through"
                    + " JAVA_OPTS, e.g. JAVA_OPTS=-Xmx" + 2 * heapMiB + "m (tensor data stays outside the heap; an input's headers,"
                    + " index and metadata live in it)";
        }
        return "internal error: " + t.getClass().getSimpleName() + (t.getMessage() == null ? "" : ": " + oneLine(t.getMessage()))
                + " (rerun with MOEPORT_DEBUG=1 for details)";
    }

    /** Longer than any honest message; a hostile input's names must not flood the terminal. */
    private static final int MAX_MESSAGE = 2000;

    /**
     * A message as one line of text: line breaks become spaces, other control characters (which may
     * come from a file's names) are escaped so that they cannot drive the terminal, and its length is capped.
     */
    static String oneLine(String s) {
        if (s == null) {
            return "";
        }
        String line = Names.escaped(s.replaceAll("\\s*\\R\\s*", " "));
        return line.length() <= MAX_MESSAGE ? line
                : line.substring(0, MAX_MESSAGE) + "... (" + (line.length() - MAX_MESSAGE) + " more characters)";
    }

    private static boolean debug() {
        return "1".equals(System.getenv("MOEPORT_DEBUG"));
    }

    /** The version from the build (a filtered resource), or "dev" when run from unpackaged classes. */
    public static final class Version implements CommandLine.IVersionProvider {
        public static String number() {
            try (InputStream in = Main.class.getResourceAsStream("/dev/moeport/version.properties")) {
                Properties p = new Properties();
                if (in != null) {
                    p.load(in);
                }
                String v = p.getProperty("version", "dev");
                return v.startsWith("${") ? "dev" : v;
            } catch (IOException e) {
                return "dev";
            }
        }

        @Override
        public String[] getVersion() {
            return new String[] {"moeport " + number(),
                "kernel: " + QuantKernels.describe(),
                "runtime: Java " + Runtime.version() + " (" + System.getProperty("java.vm.name") + ", " + System.getProperty("java.vendor")
                        + ") at " + System.getProperty("java.home")};
        }
    }
}
