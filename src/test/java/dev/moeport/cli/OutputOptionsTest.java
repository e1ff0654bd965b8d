package dev.moeport.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;

import org.junit.jupiter.api.Assumptions;
import org.junit.jupiter.api.Test;
import picocli.CommandLine;

/** Which runs read their input's largest tensors while they plan. */
class OutputOptionsTest {
    @Test
    void onlyAWholeRunReadsAheadWhilePlanning() {
        Assumptions.assumeTrue(System.getenv("SLURM_ARRAY_TASK_ID") == null && System.getenv("JOB_COMPLETION_INDEX") == null,
                "a scheduler's index here chooses a part for every run");
        assertEquals(true, readsAhead());
        assertEquals(false, readsAhead("--dry-run"));
        // a part's or a resumed run's first jobs may read none of the largest tensors
        assertEquals(false, readsAhead("--resume"));
        assertEquals(false, readsAhead("--part", "2/3"));
        assertEquals(true, readsAhead("--part", "1/1"));
    }

    private static boolean readsAhead(String... options) {
        ExportCommand export = new ExportCommand();
        CommandLine cli = new CommandLine(export);
        String[] args = java.util.stream.Stream.concat(java.util.stream.Stream.of("--in", "in", "--out", "out"), java.util.Arrays.stream(options))
                .toArray(String[]::new);
        cli.parseArgs(args);
        return export.output.readsAheadWhilePlanning(cli.getCommandSpec());
    }
}
