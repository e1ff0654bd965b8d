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

    @Option(names = "--no-progress", description = "No progress (also MOEPORT_NO_PROGRESS=1, or -q).")
    boolean noProgress;

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
                .filter(java.util.Objects::nonNull).toList(), threads, fsync, Main.progress(spec, noProgress || json));
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
