package dev.moeport.cli;

import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.moeport.arch.Architecture;
import dev.moeport.arch.Architectures;
import dev.moeport.arch.ModelConfig;
import dev.moeport.convert.McoreLayout;
import dev.moeport.exec.Progress;
import dev.moeport.format.Checkpoint;
import dev.moeport.format.Checkpoints;
import dev.moeport.quant.QuantKernels;
import dev.moeport.util.NaturalOrder;
import dev.moeport.verify.CheckpointView;
import dev.moeport.verify.Verifier;
import java.io.PrintWriter;
import java.nio.file.Path;
import java.util.Comparator;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;

@Command(
        name = "verify",
        sortOptions = false,
        mixinStandardHelpOptions = true,
        description = {
            "Compares two checkpoints tensor by tensor, whatever their layouts: Hugging Face or Megatron-Core" +
                " (mapped to HF names with the architecture's rules), quantized or not (decoded first). Reports " +
                "tensors missing or extra in B, shape and dtype differences, and for every common tensor whether " +
                "it is bit-identical or else its max and mean absolute error and its SNR in dB, A being the " +
                "reference. Tensors with exactly equal values in different dtypes (bf16 against f32) are listed as " +
                "such and match unless --strict-dtype. Streams both in bounded memory, on --threads workers.",
            "",
            "Exit codes: 0 the checkpoints match (bit for bit, in values where only dtypes differ, or within " +
                "--tolerance / --max-abs-error); 3 " +
                "they differ; 1 an input could not be read; 2 usage error.",
            ""
        },
        footerHeading = "%nExamples:%n",
        footer = {
            "  moeport verify hf/ exported/",
            "  moeport verify mcore/ hf-nvfp4/ --hf-config hf/ --tolerance 15",
            "  moeport verify a/ b/ --json | jq '.tensors[] | select(.identical | not) | .name'"
        })
final class VerifyCommand implements Callable<Integer> {
    static final int EXIT_DIFFERENT = 3;

    @Spec
    CommandSpec spec;

    @Parameters(index = "0", converter = CheckpointPath.class, paramLabel = "A", description = "The reference checkpoint.")
    Path a;

    @Parameters(index = "1", converter = CheckpointPath.class, paramLabel = "B", description = "The checkpoint to check.")
    Path b;

    @Option(names = "--hf-config", converter = CheckpointPath.class, paramLabel = "HF_DIR",
            description = "config.json folder that maps a Megatron-Core side (default: the folder of whichever side has a config.json).")
    Path hfConfig;

    @Option(names = "--tolerance", paramLabel = "DB", description = "Accept differing tensors whose SNR is at least DB decibels.")
    Double minSnr;

    @Option(names = "--max-abs-error", paramLabel = "X", description = "Accept differing tensors whose largest absolute error is at most X.")
    Double maxAbsError;

    @Option(names = "--strict-dtype", description = "Fail on tensors whose values are equal but whose dtypes differ.")
    boolean strictDtype;

    @Option(names = "--show", paramLabel = "N", defaultValue = "20", description = "List at most N differing tensors, worst first (default ${DEFAULT-VALUE}).")
    int show;

    @Option(names = "--threads", paramLabel = "N", description = "Worker threads (default: all cores).")
    int threads = Runtime.getRuntime().availableProcessors();

    @Option(names = "--json", description = "Print every tensor's figures as JSON.")
    boolean json;

    @Override
    public Integer call() {
        PrintWriter out = spec.commandLine().getOut();
        if (show < 0 || threads < 1) {
            throw new picocli.CommandLine.ParameterException(spec.commandLine(), show < 0 ? "--show must be 0 or more" : "--threads must be at least 1");
        }
        Path configDir = hfConfig != null ? hfConfig : CheckpointView.configBeside(a) != null ? CheckpointView.configBeside(a) : CheckpointView.configBeside(b);
        try (Checkpoint ca = Checkpoints.open(a); Checkpoint cb = Checkpoints.open(b)) {
            ModelConfig config = configDir == null ? null : ModelConfig.load(configDir);
            CheckpointView va = CheckpointView.of(a, ca, config, QuantKernels.get());
            CheckpointView vb = CheckpointView.of(b, cb, config, QuantKernels.get());
            Architecture arch = config == null ? null : Architectures.find(config);
            if (arch != null && arch.wrapper() != null
                    && McoreLayout.isMcore(ca.tensors().keySet()) != McoreLayout.isMcore(cb.tensors().keySet())) {
                // Megatron-Core holds a multimodal wrapper's language model only: its vision tower is not compared.
                va = va.languageModelOnly(arch);
                vb = vb.languageModelOnly(arch);
            }
            long total = Verifier.comparedBytes(va, vb);
            Verifier.Report report;
            try (Progress progress = new Progress(total, va.tensors().size(), Main.progress(spec, json))) {
                report = Verifier.compare(va, vb, threads, progress);
            }
            List<Verifier.TensorResult> dtypeOnly = report.results().stream().filter(Verifier.TensorResult::dtypeOnly)
                    .sorted(Comparator.comparing(Verifier.TensorResult::name, NaturalOrder.INSTANCE)).toList();
            List<Verifier.TensorResult> differing = report.results().stream().filter(r -> !r.identical() && !r.dtypeOnly())
                    .sorted(Comparator.comparingDouble(Verifier.TensorResult::snrDb).thenComparing(Verifier.TensorResult::name, NaturalOrder.INSTANCE))
                    .toList();
            List<Verifier.TensorResult> beyond = report.results().stream().filter(r -> !withinTolerance(r)).toList();
            boolean match = report.missingInB().isEmpty() && report.extraInB().isEmpty() && report.shapeMismatches().isEmpty() && beyond.isEmpty();
            if (json) {
                printJson(out, va, vb, report, match);
            } else {
                printText(out, va, vb, report, dtypeOnly, differing, beyond, match);
            }
            return match ? 0 : EXIT_DIFFERENT;
        }
    }

    private boolean withinTolerance(Verifier.TensorResult r) {
        return r.identical() || (r.dtypeOnly() ? !strictDtype : accepted(r));
    }

    private boolean accepted(Verifier.TensorResult r) {
        if (minSnr == null && maxAbsError == null) {
            return false;
        }
        return (minSnr == null || r.snrDb() >= minSnr) && (maxAbsError == null || r.maxAbsError() <= maxAbsError);
    }

    private void printText(PrintWriter out, CheckpointView va, CheckpointView vb, Verifier.Report report, List<Verifier.TensorResult> dtypeOnly,
                           List<Verifier.TensorResult> differing, List<Verifier.TensorResult> beyond, boolean match) {
        for (CheckpointView v : List.of(va, vb)) {
            out.println((v == va ? "A: " : "B: ") + v.path() + " (" + v.layout() + ", " + v.tensors().size() + " tensors"
                    + (v.quantized().isEmpty() ? "" : ", " + v.quantized().size() + " modules decoded")
                    + (v.dropped().isEmpty() ? "" : ", " + v.dropped().size() + " entries not compared") + ")");
        }
        int identical = report.results().size() - dtypeOnly.size() - differing.size();
        out.println("identical: " + identical + " of " + report.results().size() + " common tensors; equal values in another dtype: "
                + dtypeOnly.size() + "; differing: " + differing.size()
                + "; missing in B: " + report.missingInB().size() + "; extra in B: " + report.extraInB().size()
                + "; shape mismatches: " + report.shapeMismatches().size());
        report.missingInB().stream().limit(show).forEach(n -> out.println("  missing in B: " + n));
        report.extraInB().stream().limit(show).forEach(n -> out.println("  extra in B: " + n));
        report.shapeMismatches().stream().limit(show).forEach(m -> out.println("  shape: " + m.name() + " " + m.shapeA() + " vs " + m.shapeB()));
        dtypeOnly.stream().limit(show).forEach(r -> out.println("  dtype only: " + r.name() + " " + r.dtypeA() + " vs " + r.dtypeB()
                + (strictDtype ? " (equal values; a difference under --strict-dtype)" : " (equal values; --strict-dtype fails on it)")));
        if (dtypeOnly.size() > show) {
            out.println("  ... and " + (dtypeOnly.size() - show) + " more with equal values in another dtype (--show N)");
        }
        if (!differing.isEmpty()) {
            Table table = new Table("TENSOR", "DTYPES", ">MAX ABS", ">MEAN ABS", ">SNR dB");
            differing.stream().limit(show).forEach(r -> table.add(r.name(), r.dtypeA() == r.dtypeB() ? r.dtypeA() : r.dtypeA() + "/" + r.dtypeB(),
                    number(r.maxAbsError()), number(r.meanAbsError()), String.format(Locale.ROOT, "%.2f", r.snrDb())));
            table.print(out);
            if (differing.size() > show) {
                out.println("  ... and " + (differing.size() - show) + " more (--show N)");
            }
            Verifier.TensorResult worst = differing.getFirst();
            out.printf(Locale.ROOT, "worst SNR: %.2f dB (%s); %d tensor(s) beyond tolerance%n", worst.snrDb(), worst.name(), beyond.size());
        }
        out.println(match ? "MATCH" : "DIFFERENT");
    }

    private static String number(double v) {
        return Double.isNaN(v) ? "-" : String.format(Locale.ROOT, "%.4g", v);
    }

    private void printJson(PrintWriter out, CheckpointView va, CheckpointView vb, Verifier.Report report, boolean match) {
        ObjectNode root = Json.document();
        root.put("a", Json.path(va.path()));
        root.put("b", Json.path(vb.path()));
        root.put("match", match);
        report.missingInB().forEach(root.withArray("missing_in_b")::add);
        report.extraInB().forEach(root.withArray("extra_in_b")::add);
        ArrayNode shapes = root.putArray("shape_mismatches");
        report.shapeMismatches().forEach(m -> shapes.addObject().put("name", m.name()).put("shape_a", m.shapeA()).put("shape_b", m.shapeB()));
        ArrayNode tensors = root.putArray("tensors");
        report.results().stream().sorted(Comparator.comparing(Verifier.TensorResult::name, NaturalOrder.INSTANCE)).forEach(r -> {
            ObjectNode t = tensors.addObject();
            t.put("name", r.name());
            t.put("dtype_a", r.dtypeA().name());
            t.put("dtype_b", r.dtypeB().name());
            var shape = t.putArray("shape");
            for (long d : r.shape().toArray()) {
                shape.add(d);
            }
            t.put("identical", r.identical());
            t.put("dtype_only", r.dtypeOnly());
            t.put("max_abs_error", r.maxAbsError());
            t.put("mean_abs_error", r.meanAbsError());
            if (Double.isInfinite(r.snrDb()) || Double.isNaN(r.snrDb())) {
                t.putNull("snr_db");
            } else {
                t.put("snr_db", r.snrDb());
            }
            t.put("within_tolerance", withinTolerance(r));
        });
        Json.print(out, root);
    }
}
