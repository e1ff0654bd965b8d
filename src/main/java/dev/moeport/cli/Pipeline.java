package dev.moeport.cli;

import dev.moeport.convert.Conversion;
import dev.moeport.exec.Executor;
import dev.moeport.format.Checkpoint;
import dev.moeport.format.Checkpoints;
import dev.moeport.plan.Plan;
import dev.moeport.quant.QuantKernels;
import java.io.PrintWriter;
import java.nio.file.Path;
import java.util.List;
import picocli.CommandLine.Model.CommandSpec;

/**
 * The sequence every converting command follows: open the input, map and plan it (each command's own
 * part), then print the plan ({@code --dry-run}) or run it into the output folder and print the summary.
 */
final class Pipeline {
    private Pipeline() {}

    /**
     * A command's plan, what its summary adds, and the file format it writes.
     *
     * @param notes lines the summary adds (decoded modules, quantization notes)
     */
    record Planned(Plan plan, List<String> notes, Conversion.Writer writer) {
        Planned(Plan plan, List<String> notes) {
            this(plan, notes, Conversion.SAFETENSORS);
        }
    }

    /** A command's own part: from the opened input to its plan. */
    @FunctionalInterface
    interface Planner {
        Planned plan(Checkpoint input);
    }

    /**
     * Opens {@code in}, plans it with {@code planner}, and prints the plan or runs it.
     *
     * @param verb the summary's verb ({@code exported})
     * @param inputs everything the run reads, which the output folder must stay apart from
     */
    static int run(CommandSpec spec, OutputOptions output, String verb, Path in, List<Path> inputs, Planner planner) {
        try (Checkpoint checkpoint = Checkpoints.open(in)) {
            if (output.readsAheadWhilePlanning(spec)) {
                Executor.readAheadWhilePlanning(checkpoint.tensors().values());
            }
            Planned planned = planner.plan(checkpoint);
            PrintWriter out = spec.commandLine().getOut();
            if (output.dryRun) {
                output.printPlan(out, planned.plan(), spec);
                return 0;
            }
            Conversion.Summary summary = Conversion.run(planned.plan(), output.target(spec, inputs.toArray(Path[]::new)), QuantKernels.get(),
                    planned.writer());
            PlanReport.printSummary(out, verb, in, output.out, summary, planned.notes(), output.json);
            return 0;
        }
    }
}
