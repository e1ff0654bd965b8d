package dev.moeport.cli;

import dev.moeport.convert.HfOutputFolder;
import dev.moeport.io.StagedPlan;
import java.nio.file.Path;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;
import picocli.CommandLine.Model.CommandSpec;

@Command(
        name = "finalize",
        sortOptions = false,
        mixinStandardHelpOptions = true,
        description = {
            "Completes an output folder that the parts of one plan (--part I/N) wrote: once every part's files are finished, switches " +
                "the checkpoint in (index, configs, shards) as the last part to end does by itself. Needed only where no part could " +
                "(a file system without locks, or the last part killed between its last file and the switch). A folder with files " +
                "still missing is refused in one line, naming them, and left as it is.",
            ""
        },
        footerHeading = "%nExample:%n",
        footer = "  sbatch --dependency=afterok:$ARRAY_JOB moeport finalize /shared/out")
final class FinalizeCommand implements Callable<Integer> {
    @Spec
    CommandSpec spec;

    @Parameters(paramLabel = "DIR", description = "The output folder the parts wrote into.")
    Path dir;

    @Override
    public Integer call() {
        StagedPlan.finalizeFolder(dir, HfOutputFolder::isCheckpointFile, HfOutputFolder::marksComplete);
        spec.commandLine().getOut().println("finalized " + dir);
        return 0;
    }
}
