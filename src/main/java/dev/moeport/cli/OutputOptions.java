package dev.moeport.cli;

import dev.moeport.format.safetensors.ShardLayout;
import dev.moeport.util.Sizes;
import java.nio.file.Path;
import picocli.CommandLine.ITypeConverter;
import picocli.CommandLine.Option;

/** The options every command that writes a checkpoint shares. */
final class OutputOptions {
    @Option(names = "--out", paramLabel = "DIR", description = "Output folder. Must not exist or be empty, unless --overwrite; never the input's folder.")
    Path out;

    @Option(names = "--overwrite", description = "Replace the checkpoint in an existing output folder.")
    boolean overwrite;

    @Option(names = "--max-shard-size", paramLabel = "SIZE", converter = SizeConverter.class, defaultValue = "5GB",
            description = "Largest shard: 500MB, 5GB, 2GiB or bytes (default: ${DEFAULT-VALUE}). One shard is written as model.safetensors.")
    long maxShardSize = ShardLayout.DEFAULT_MAX_SHARD_BYTES;

    @Option(names = "--threads", paramLabel = "N", description = "Worker threads (default: all ${sys:moeport.cores} cores).")
    int threads = Runtime.getRuntime().availableProcessors();

    @Option(names = "--dry-run", description = "Print the plan (every output tensor, its sources and transform) and write nothing.")
    boolean dryRun;

    @Option(names = "--json", description = "Print the plan (with --dry-run) or the summary as JSON, for scripts.")
    boolean json;

    @Option(names = "--fsync", description = "Flush every file to disk before it is renamed into place (survives power loss; slower).")
    boolean fsync;

    @Option(names = "--write-behind", paramLabel = "WHEN", description = "auto (default), on or off: write the output to the disk as it "
            + "is written, past the page cache (O_DIRECT) where the file system allows, else handing each write to the disk and dropping it "
            + "from memory, instead of leaving it to the page cache; and drop the input from the page cache as it is read for the last time. "
            + "auto: when the input and output together are larger than the memory available (a memory cgroup's limit included), where "
            + "dirty pages would otherwise fill memory and stall reading, and the kernel would push out input read ahead before its use.")
    String writeBehind = "auto";

    @Option(names = "--no-progress", description = "No progress (also MOEPORT_NO_PROGRESS=1, or -q).")
    boolean noProgress;

    @Option(names = "--part", paramLabel = "I/N",
            description = "Write part I of N (counted from 1) of the plan, for N processes on as many machines writing into one --out on a "
                    + "shared file system: each part computes the same plan and writes its own shards (balanced by bytes); the last part to end "
                    + "completes the folder (or 'moeport finalize DIR'). Without it, a Slurm job array's SLURM_ARRAY_TASK_ID (with "
                    + "_COUNT or _MIN/_MAX) or a Kubernetes Indexed Job's JOB_COMPLETION_INDEX (with --parts) chooses the part.")
    String part;

    @Option(names = "--parts", paramLabel = "N", description = "The number of parts, where a scheduler's index chooses this run's (JOB_COMPLETION_INDEX).")
    Integer parts;

    @Option(names = "--resume", description = "Reuse the files an interrupted run of the same plan (same inputs, same options) finished, after "
            + "checking their size and CRC-32C; refused in one line if the inputs or options changed. Without it, a run removes what an "
            + "interrupted one left.")
    boolean resume;

    static {
        System.setProperty("moeport.cores", Integer.toString(Runtime.getRuntime().availableProcessors()));
    }

    /** {@code --out} is required by every command but some of their modes (e.g. {@code export --list-architectures}). */
    Path requireOut(picocli.CommandLine.Model.CommandSpec spec) {
        if (out == null) {
            throw new picocli.CommandLine.ParameterException(spec.commandLine(), "Missing required option: '--out'");
        }
        return out;
    }

    /** Where and how the run writes; {@code inputs} are what it reads, which the output must stay apart from. */
    dev.moeport.convert.Conversion.Target target(picocli.CommandLine.Model.CommandSpec spec, Path... inputs) {
        if (threads < 1) {
            throw new picocli.CommandLine.ParameterException(spec.commandLine(), "--threads must be at least 1");
        }
        return new dev.moeport.convert.Conversion.Target(requireOut(spec), overwrite, java.util.Arrays.stream(inputs)
                .filter(java.util.Objects::nonNull).toList(), threads, fsync, Main.progress(spec, noProgress || json), part(spec), resume,
                shapingOptions(spec), writeBehind(spec));
    }

    private dev.moeport.io.WriteBehind.Choice writeBehind(picocli.CommandLine.Model.CommandSpec spec) {
        return switch (writeBehind.toLowerCase(java.util.Locale.ROOT)) {
            case "auto" -> dev.moeport.io.WriteBehind.Choice.AUTO;
            case "on" -> dev.moeport.io.WriteBehind.Choice.ON;
            case "off" -> dev.moeport.io.WriteBehind.Choice.OFF;
            default -> throw new picocli.CommandLine.ParameterException(spec.commandLine(), "--write-behind must be auto, on or off");
        };
    }

    /** This run's part of the plan: {@code --part}, else a scheduler's variables, else the whole plan. */
    dev.moeport.plan.Part part(picocli.CommandLine.Model.CommandSpec spec) {
        try {
            return dev.moeport.plan.Part.choose(part, parts, System.getenv());
        } catch (IllegalArgumentException e) {
            throw new picocli.CommandLine.ParameterException(spec.commandLine(), e.getMessage());
        }
    }

    /**
     * Whether the run starts reading its input's largest tensors while it plans: not a dry run, nor a part of a plan or a
     * resumed run, whose jobs may not read those tensors at all (each part of a Slurm array would read the same gigabyte).
     */
    boolean readsAheadWhilePlanning(picocli.CommandLine.Model.CommandSpec spec) {
        return !dryRun && !resume && part(spec).isWhole();
    }

    /**
     * Starts warming up the kernels that will quantize to {@code formats} while the command plans: for a run (not a
     * dry run) of an input large enough for the run to warm them up itself ({@link dev.moeport.exec.Executor#WARM_UP_FROM}).
     * The weights are guessed BF16; a plan quantizing another dtype warms that up as it starts.
     */
    void warmUpAhead(dev.moeport.format.Checkpoint input, java.util.List<dev.moeport.quant.QuantFormat> formats) {
        if (!dryRun && !formats.isEmpty() && input.totalBytes() >= dev.moeport.exec.Executor.WARM_UP_FROM) {
            formats.forEach(format -> dev.moeport.exec.Executor.warmUpAhead(dev.moeport.quant.QuantKernels.get(), format, dev.moeport.tensor.DType.BF16));
        }
    }

    /** Prints the plan of a dry run; with a part, that part's files and how even the parts are. */
    void printPlan(java.io.PrintWriter out, dev.moeport.plan.Plan plan, picocli.CommandLine.Model.CommandSpec spec) {
        PlanReport.printPlan(out, plan, json, part(spec));
    }

    /** Options that do not change what is written (how fast, how loud, which part). */
    private static final java.util.Set<String> NOT_SHAPING = java.util.Set.of("--part", "--parts", "--resume", "--threads", "--dry-run", "--json",
            "--no-progress", "--fsync", "--write-behind", "--overwrite", "--out", "--quiet", "--verbose", "--progress-interval", "--help", "--version");

    /** The options that shape the output, each with its value (given or default), paths made absolute: parts of one plan agree on them. */
    private static java.util.List<String> shapingOptions(picocli.CommandLine.Model.CommandSpec spec) {
        java.util.List<String> options = new java.util.ArrayList<>();
        options.add(spec.name());
        for (picocli.CommandLine.Model.OptionSpec o : spec.options()) {
            if (NOT_SHAPING.contains(o.longestName())) {
                continue;
            }
            Object value = o.getValue();
            options.add(o.longestName() + "=" + (value instanceof Path p ? p.toAbsolutePath().normalize() : value));
        }
        return options;
    }

    /** The folder of a checkpoint path: the path itself, or the folder of a file or index. */
    static Path folderOf(Path checkpoint) {
        return java.nio.file.Files.isDirectory(checkpoint) ? checkpoint : checkpoint.toAbsolutePath().getParent();
    }

    static final class SizeConverter implements ITypeConverter<Long> {
        @Override
        public Long convert(String value) {
            try {
                return Sizes.parse(value);
            } catch (IllegalArgumentException e) {
                throw new picocli.CommandLine.TypeConversionException(e.getMessage());
            }
        }
    }
}
