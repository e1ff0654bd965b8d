package dev.moeport.convert;

import dev.moeport.exec.Executor;
import dev.moeport.exec.Progress;
import dev.moeport.format.TensorOutput;
import dev.moeport.format.safetensors.SafetensorsWriter;
import dev.moeport.format.safetensors.ShardLayout;
import dev.moeport.io.StagedPlan;
import dev.moeport.io.WriteBehind;
import dev.moeport.plan.OutputFile;
import dev.moeport.plan.Part;
import dev.moeport.plan.Plan;
import dev.moeport.quant.QuantKernel;
import dev.moeport.quant.QuantKernels;
import java.nio.file.Path;
import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.function.IntPredicate;

/**
 * Runs a plan, or one part of it, into an output folder: the executor writes the shards into the folder's staging
 * area, each renamed into place and recorded as it completes, then the whole checkpoint (with the plan's other
 * files, model files and JSON configs, staged beside it) is switched in at once when every part's files are there
 * ({@link StagedPlan}). Whatever happens, the folder comes back as the earlier checkpoint or the new one.
 */
public final class Conversion {

    /**
     * What was done.
     *
     * @param tensors the plan's output tensors, {@code outputBytes} and {@code shards} its bytes and files
     * @param inputBytes what this run read
     * @param copiedFiles the other files this run wrote (none where another part wrote them)
     * @param kernel the quantization kernel that ran, or null when this run needed none
     * @param writeBehind whether the output's pages went to the disk as they were written ({@link WriteBehind}) and the input's
     *     left the page cache once read ({@link dev.moeport.io.DropBehind})
     */
    public record Summary(int tensors, long inputBytes, long outputBytes, int shards, Duration elapsed, List<String> copiedFiles,
                          String kernel, Parts parts, boolean writeBehind) {
        public double inputRate() {
            double s = elapsed.toNanos() / 1e9;
            return s <= 0 ? 0 : inputBytes / s;
        }
    }

    /**
     * What this part of the plan did.
     *
     * @param own the files this part writes; {@code written} of them this run, {@code reused} by {@code --resume}
     * @param completed whether this run switched the finished checkpoint in
     * @param missing files of other parts not finished yet, when it did not ("path (part I/N)")
     */
    public record Parts(Part part, int own, int written, int reused, boolean completed, List<String> missing) {}

    private Conversion() {}

    /**
     * Where and how a run writes.
     *
     * @param inputs the run's input checkpoints and folders, which the output must stay apart from
     * @param bar where and how to show progress, or null
     * @param part which part of the plan this run writes ({@link Part#WHOLE}: all of it)
     * @param resume reuse the files an interrupted run of the same plan finished
     * @param options the options that shape the output, as given: parts of one plan must agree on them
     * @param writeBehind whether to hand the output's pages to the disk as they are written, and drop the input's from the
     *     page cache once read
     */
    public record Target(Path out, boolean overwrite, List<Path> inputs, int threads, boolean fsync, Progress.Display bar, Part part,
                         boolean resume, List<String> options, WriteBehind.Choice writeBehind) {}

    /** The file format a run writes: creates the output for a plan's tensors, or some of its files. */
    public interface Writer {
        /**
         * @param out the folder to write in (the staging folder)
         * @param destination the folder the output is switched into once complete, which a torch_dist {@code .metadata} names
         * @param shards the files (by shard index of the plan's layout) to write
         * @param writeBehind hand each file's pages to the disk as they are written ({@link WriteBehind})
         * @param finished hears of each file once it is complete and renamed into place
         */
        TensorOutput create(Path out, Path destination, Plan plan, IntPredicate shards, boolean fsync, boolean writeBehind,
                            TensorOutput.FinishedFile finished);

        /** The file that holds shard {@code shard} of the plan's layout, relative to the output folder. */
        String file(Plan plan, int shard);
    }

    public static final Writer SAFETENSORS = new Writer() {
        @Override
        public TensorOutput create(Path out, Path destination, Plan plan, IntPredicate shards, boolean fsync, boolean writeBehind,
                                   TensorOutput.FinishedFile finished) {
            return SafetensorsWriter.create(out, plan.layout(), shards, fsync, writeBehind, finished, false);
        }

        @Override
        public String file(Plan plan, int shard) {
            return plan.layout().shards().get(shard).fileName();
        }
    };

    /**
     * Runs this part's share of {@code plan} (all of it for a whole run) into the output folder's staging area,
     * each file renamed into place and recorded as it completes; the checkpoint is switched in when every part's
     * files are there.
     */
    public static Summary run(Plan plan, Target target, QuantKernel kernel, Writer format) {
        Path out = target.out();
        Part part = target.part();
        int[] owner = owner(plan, part.count());
        StagedPlan.Stamp stamp = stamp(plan, format, owner, target);
        try (StagedPlan staged = StagedPlan.open(out, target.overwrite(), target.resume(), target.inputs(), HfOutputFolder::isCheckpointFile,
                HfOutputFolder::marksComplete, target.fsync(), stamp, part)) {
            // The whole new checkpoint is built beside the earlier one, which stays until the switch.
            Path staging = staged.staging();
            Set<String> reused = staged.reused();
            IntPredicate mine = k -> owner[k] == part.index() && !reused.contains(format.file(plan, k));
            // The other files go with whichever part stages them first.
            Plan work = plan.writing(mine).withFiles(staged.needsOtherFiles() ? plan.files() : List.of());
            Progress progress = new Progress(work.inputBytes(), work.jobs().stream().mapToInt(j -> j.outputs().size()).sum(), target.bar());
            boolean writeBehind = target.writeBehind().chooses(work.inputBytes(), work.outputBytes());
            try (progress; TensorOutput writer = format.create(staging, out, plan, mine, target.fsync(), writeBehind, staged::finished)) {
                // Ctrl-C or a kill -TERM: remove this run's partial files, unless its switch has begun (then it finishes).
                Thread cleanup = new Thread(() -> {
                    String done = staged.abandon(writer::close);
                    if (done != null) {
                        System.err.println("\nmoeport: interrupted; " + done);
                    }
                });
                Runtime.getRuntime().addShutdownHook(cleanup);
                try {
                    if (staged.needsOtherFiles()) {
                        writer.writeIndexFiles();
                        for (OutputFile file : work.files()) {
                            HfOutputFolder.write(staging, file, target.fsync());
                            progress.addBytes(file.inputBytes());
                        }
                        staged.otherFilesStaged();
                    }
                    staged.writing();
                    QuantKernels.ForRun runs = QuantKernels.forRun(kernel, work.kernelBytes());
                    new Executor(runs.kernel(), target.threads(), writeBehind).run(work, writer, progress);
                    writer.commit();
                    StagedPlan.Completion completion = staged.complete();
                    int own = (int) java.util.Arrays.stream(owner).filter(o -> o == part.index()).count();
                    return new Summary(plan.outputTensorCount(), work.inputBytes(), plan.outputBytes(), plan.layout().shards().size(),
                            progress.elapsed(), work.files().stream().map(OutputFile::name).toList(),
                            work.usesKernel() ? runs.description() : null, new Parts(part, own, staged.writtenCount(), reused.size(), completion.switched(),
                            completion.missing()), writeBehind);
                } finally {
                    try {
                        Runtime.getRuntime().removeShutdownHook(cleanup);
                    } catch (IllegalStateException shuttingDown) {
                        // The hook is running already.
                    }
                }
            }
        }
    }

    /** Which part writes each file (shard) of the plan, balanced by bytes. */
    public static int[] owner(Plan plan, int parts) {
        return Part.assign(plan.layout().shards().stream().map(ShardLayout.Shard::dataBytes).toList(), parts);
    }

    /** What makes runs parts of one plan: inputs, options, the layout and the files' owners. */
    private static StagedPlan.Stamp stamp(Plan plan, Writer format, int[] owner, Target target) {
        List<StagedPlan.PlannedFile> planned = new ArrayList<>();
        for (int k = 0; k < owner.length; k++) {
            planned.add(new StagedPlan.PlannedFile(format.file(plan, k), owner[k], plan.layout().shards().get(k).dataBytes()));
        }
        return new StagedPlan.Stamp(target.part().count(), target.options(), inputFiles(target.inputs()), plan.layout().digest(), planned);
    }

    /** Every file of the inputs (a folder's, to three levels), with its size and modification time. */
    private static List<String> inputFiles(List<Path> inputs) {
        List<String> lines = new ArrayList<>();
        for (Path input : inputs) {
            Path root = input.toAbsolutePath().normalize();
            if (java.nio.file.Files.isRegularFile(root) && root.getFileName().toString().endsWith(".json")) {
                root = root.getParent(); // an index: its shards lie beside it
            }
            try (java.util.stream.Stream<Path> walk = java.nio.file.Files.walk(root, 3)) {
                for (Path p : walk.filter(java.nio.file.Files::isRegularFile).sorted().toList()) {
                    lines.add(p + "\t" + java.nio.file.Files.size(p) + "\t" + java.nio.file.Files.getLastModifiedTime(p).toMillis());
                }
            } catch (java.io.IOException e) {
                throw new dev.moeport.MoeportException(input + ": cannot list (" + dev.moeport.io.IoErrors.why(e) + ")", e);
            }
        }
        return lines;
    }
}
