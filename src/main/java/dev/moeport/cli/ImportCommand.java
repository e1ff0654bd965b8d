package dev.moeport.cli;

import dev.moeport.MoeportException;
import dev.moeport.arch.Architecture;
import dev.moeport.arch.Architectures;
import dev.moeport.arch.ModelConfig;
import dev.moeport.arch.Transform;
import dev.moeport.convert.Calibration;
import dev.moeport.convert.Conversion;
import dev.moeport.convert.ExportMapper;
import dev.moeport.convert.HfLayout;
import dev.moeport.convert.ImportMapper;
import dev.moeport.convert.KeptCalibration;
import dev.moeport.convert.MappedTensor;
import dev.moeport.convert.McoreLayout;
import dev.moeport.convert.OutputPlanner;
import dev.moeport.convert.QuantSelection;
import dev.moeport.convert.QuantizedCheckpoint;
import dev.moeport.format.Checkpoint;
import dev.moeport.format.Checkpoints;
import dev.moeport.plan.Plan;
import dev.moeport.quant.QuantKernels;
import dev.moeport.tensor.DType;
import java.io.PrintWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

@Command(
        name = "import",
        sortOptions = false,
        mixinStandardHelpOptions = true,
        description = {
            "Converts a Hugging Face checkpoint to Megatron-Core tensors: the export's rule table read the " +
                "other way. q/k/v are interleaved into linear_qkv by KV group, gate and up merged into [gate ; " +
                "up], norms moved to their fused MCore names, the vocabulary padded to a multiple of " +
                "--vocab-multiple, and the per-expert tensors merged into the --experts layout. Quantized input " +
                "(any format moeport writes, GPT-OSS MXFP4, DeepSeek FP8) is decoded on the way (to bf16, or " +
                "--dtype); with --keep-quantized, an fp8 or nvfp4 input's calibration is kept as quantizer state.",
            ""
        },
        footerHeading = "%nExamples:%n",
        footer = {
            "  moeport import --in hf/ --out mcore/",
            "  moeport import --in hf-nvfp4/ --out mcore-seq/ --experts sequential --dtype bf16"
        })
final class ImportCommand implements Callable<Integer> {
    @Spec
    CommandSpec spec;

    @Option(names = "--in", required = true, converter = CheckpointPath.class, paramLabel = "HF_DIR", description = "The Hugging Face folder (weights and config.json).")
    Path in;

    @Mixin
    OutputOptions output;

    @Option(names = "--experts", paramLabel = "LAYOUT", defaultValue = "te",
            description = "Expert layout: te (TEGroupedMLP linear_fc1.weight{e}), sequential (local_experts.{e}) or stacked (one [E, out, in] tensor). Default: ${DEFAULT-VALUE}.")
    String experts;

    @Option(names = "--vocab-multiple", paramLabel = "N", defaultValue = "128",
            description = "Pad the embedding and output layer rows to a multiple of N, as Megatron does (128 x tensor parallelism; default ${DEFAULT-VALUE}).")
    long vocabMultiple;

    @Option(names = "--dtype", paramLabel = "DTYPE", converter = DtypeConverter.class,
            description = "Cast floating-point weights (and decoded quantized ones) to bf16, f16 or f32. Default: keep (decoded weights: bf16).")
    DType dtype;

    @Option(names = "--keep-quantized",
            description = "For fp8 and nvfp4 input: keep its calibration as Model Optimizer's quantizer state (weight_quantizer._amax, input_quantizer._amax) beside the decoded weights, so that 'export --format' of the same format gives back the same per-tensor scales.")
    boolean keepQuantized;

    @Option(names = "--arch", paramLabel = "NAME", description = "Architecture, when config.json does not say.")
    String arch;

    @Option(names = "--allow-unmapped", description = "Warn about input tensors no rule uses instead of failing.")
    boolean allowUnmapped;

    @Override
    public Integer call() {
        output.requireOut(spec);
        if (vocabMultiple < 1) {
            throw new picocli.CommandLine.ParameterException(spec.commandLine(), "--vocab-multiple must be at least 1");
        }
        McoreLayout.Experts layout = switch (experts.toLowerCase(Locale.ROOT)) {
            case "te" -> McoreLayout.Experts.TE_GROUPED;
            case "sequential" -> McoreLayout.Experts.SEQUENTIAL;
            case "stacked" -> McoreLayout.Experts.STACKED;
            default -> throw new picocli.CommandLine.ParameterException(spec.commandLine(), "--experts must be te, sequential or stacked");
        };
        Path folder = OutputOptions.folderOf(in);
        ModelConfig config = ModelConfig.load(folder);
        Architecture architecture = Architectures.of(config, arch);
        PrintWriter out = spec.commandLine().getOut();
        try (Checkpoint checkpoint = Checkpoints.open(in)) {
            if (McoreLayout.isMcore(checkpoint.tensors().keySet())) {
                throw new MoeportException(in + ": already a Megatron-Core checkpoint; import reads Hugging Face checkpoints");
            }
            QuantizedCheckpoint.Decoded decoded = QuantizedCheckpoint.decode(checkpoint.tensors(), QuantizedCheckpoint.declaredFormat(folder),
                    dtype != null ? dtype : DType.BF16, QuantKernels.get());
            ExportMapper.Result mapped = ImportMapper.map(architecture, config, HfLayout.toPerExpert(architecture, decoded.tensors()), layout,
                    new Transform.ImportOptions(vocabMultiple), in);
            List<String> notes = new ArrayList<>(mapped.requireMapped(in, architecture, allowUnmapped, ""));
            if (!decoded.modules().isEmpty()) {
                notes.add(decoded.modules().size() + " " + decoded.format().cliName() + " module(s) decoded");
            }
            List<MappedTensor> tensors = new ArrayList<>(mapped.tensors());
            if (keepQuantized) {
                if (decoded.modules().isEmpty()) {
                    throw new MoeportException(in + ": --keep-quantized, but the checkpoint is not quantized");
                }
                List<MappedTensor> state = KeptCalibration.of(decoded.format(), checkpoint.tensors(), mapped.tensors());
                tensors.addAll(state);
                notes.add(state.size() + " quantizer state tensor(s) keep the " + decoded.format().cliName() + " calibration");
            }
            OutputPlanner planner = new OutputPlanner(null, dtype, QuantSelection.of(List.of(), List.of(), List.of()), Calibration.NONE);
            Plan plan = Plan.of(planner.plan(tensors), output.maxShardSize);
            if (output.dryRun) {
                PlanReport.printPlan(out, plan, output.json);
                return 0;
            }
            Conversion.Summary summary = Conversion.run(plan, output.target(spec, in), Conversion.Files.none(), QuantKernels.get());
            PlanReport.printSummary(out, "imported", in, output.out, summary, notes, output.json);
        }
        return 0;
    }
}
