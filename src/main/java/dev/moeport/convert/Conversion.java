package dev.moeport.convert;

import dev.moeport.exec.Executor;
import dev.moeport.exec.Progress;
import dev.moeport.format.TensorOutput;
import dev.moeport.format.safetensors.SafetensorsWriter;
import dev.moeport.io.OutputFolder;
import dev.moeport.plan.OutputFile;
import dev.moeport.plan.Plan;
import dev.moeport.quant.QuantKernel;
import java.nio.file.Path;
import java.time.Duration;
import java.util.List;

/**
 * Runs a plan into an output folder: the executor writes the shards into the folder's staging area, then
 * the plan's other files (model files, JSON configs) go there, and the whole checkpoint is switched in at once
 * ({@link OutputFolder#commit()}). Whatever happens, the folder comes back as the earlier checkpoint or the new one.
 */
public final class Conversion {

    /**
     * What was done.
     *
     * @param kernel the quantization kernel that ran, or null when the plan needed none
     */
    public record Summary(int tensors, long inputBytes, long outputBytes, int shards, Duration elapsed, List<String> copiedFiles,
                          String kernel) {
        public double inputRate() {
            double s = elapsed.toNanos() / 1e9;
            return s <= 0 ? 0 : inputBytes / s;
        }
    }

    private Conversion() {}

    /**
     * Where and how a run writes.
     *
     * @param inputs the run's input checkpoints and folders, which the output must stay apart from
     * @param bar where and how to show progress, or null
     */
    public record Target(Path out, boolean overwrite, List<Path> inputs, int threads, boolean fsync, Progress.Display bar) {}

    /** The file format a run writes: creates the output for a plan's tensors. */
    @FunctionalInterface
    public interface Writer {
        TensorOutput create(Path out, Plan plan, boolean fsync);
    }

    public static final Writer SAFETENSORS = (out, plan, fsync) -> SafetensorsWriter.create(out, plan.layout(), fsync);

    public static Summary run(Plan plan, Target target, QuantKernel kernel, Writer format) {
        Path out = target.out();
        Progress progress = new Progress(plan.inputBytes(), plan.outputTensorCount(), target.bar());
        try (OutputFolder folder = HfOutputFolder.open(out, target.overwrite(), target.inputs(), target.fsync())) {
            // The whole new checkpoint is built beside the earlier one, which stays until the switch.
            Path staging = folder.staging();
            try (progress; TensorOutput writer = format.create(staging, plan, target.fsync())) {
                // Ctrl-C or a kill -TERM: remove what this run staged, unless its switch has begun (then it finishes).
                Thread cleanup = new Thread(() -> {
                    if (folder.abandon(writer::close)) {
                        System.err.println("\nmoeport: interrupted; the partial output in " + out + " was removed");
                    }
                });
                Runtime.getRuntime().addShutdownHook(cleanup);
                try {
                    new Executor(kernel, target.threads()).run(plan, writer, progress);
                    for (OutputFile file : plan.files()) {
                        HfOutputFolder.write(staging, file, target.fsync());
                        progress.addBytes(file.inputBytes());
                    }
                    writer.commit();
                    folder.commit();
                } finally {
                    try {
                        Runtime.getRuntime().removeShutdownHook(cleanup);
                    } catch (IllegalStateException shuttingDown) {
                        // The hook is running already.
                    }
                }
            }
        }
        return new Summary(plan.outputTensorCount(), plan.inputBytes(), plan.outputBytes(), plan.layout().shards().size(),
                progress.elapsed(), plan.files().stream().map(OutputFile::name).toList(), plan.usesKernel() ? kernel.description() : null);
    }
}
