package dev.moeport.cli;

import com.fasterxml.jackson.databind.JsonNode;
import dev.moeport.MoeportException;
import dev.moeport.arch.ModelConfig;
import dev.moeport.convert.Conversion;
import dev.moeport.convert.HfOutputFolder;
import dev.moeport.convert.QuantizedCheckpoint;
import dev.moeport.format.Checkpoint;
import dev.moeport.format.Checkpoints;
import dev.moeport.plan.Job;
import dev.moeport.plan.OutputTensor;
import dev.moeport.plan.Piece;
import dev.moeport.plan.Plan;
import dev.moeport.quant.DequantizedTensor;
import dev.moeport.quant.QuantKernels;
import dev.moeport.tensor.DType;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

@Command(
        name = "dequantize",
        sortOptions = false,
        mixinStandardHelpOptions = true,
        description = {
            "Turns a quantized Hugging Face checkpoint (fp8, nvfp4, mxfp4, mxfp8, as moeport or Model " +
                "Optimizer write them) back into a BF16 (or --dtype) one: every quantized module's weight is " +
                "decoded with its scales, the scale tensors and input_scale are dropped, quantization_config is " +
                "removed from config.json and hf_quant_config.json is not copied. Other tensors and files are " +
                "copied unchanged.",
            ""
        },
        footerHeading = "%nExample:%n",
        footer = "  moeport dequantize --in hf-nvfp4/ --out hf-bf16/")
final class DequantizeCommand implements Callable<Integer> {
    @Spec
    CommandSpec spec;

    @Option(names = "--in", required = true, converter = CheckpointPath.class, paramLabel = "CKPT", description = "The quantized Hugging Face checkpoint.")
    Path in;

    @Mixin
    OutputOptions output;

    @Option(names = "--dtype", paramLabel = "DTYPE", converter = DtypeConverter.class, defaultValue = "bf16",
            description = "Type of the decoded weights: bf16, f16 or f32 (default: ${DEFAULT-VALUE}).")
    DType dtype;

    @Override
    public Integer call() {
        output.requireOut(spec);
        Path folder = OutputOptions.folderOf(in);
        try (Checkpoint checkpoint = Checkpoints.open(in)) {
            QuantizedCheckpoint.Decoded d = QuantizedCheckpoint.decode(checkpoint.tensors(), QuantizedCheckpoint.declaredFormat(folder), dtype,
                    QuantKernels.get());
            if (d.modules().isEmpty()) {
                throw new MoeportException(in + ": no quantized module found (no <module>.weight_scale beside a weight)");
            }
            List<Job> jobs = new ArrayList<>();
            d.tensors().forEach((name, t) -> jobs.add(new Job.Copy(new OutputTensor(name, t.dtype(), t.shape()), List.of(new Piece.Source(t)),
                    t instanceof DequantizedTensor q ? "dequantize " + q.format().cliName() : "copy")));
            Plan plan = Plan.of(jobs, output.maxShardSize);
            if (output.dryRun) {
                output.printPlan(spec.commandLine().getOut(), plan, spec);
                return 0;
            }
            Map<String, JsonNode> json = new LinkedHashMap<>();
            if (Files.exists(folder.resolve(ModelConfig.FILE_NAME))) {
                var config = ModelConfig.load(folder).json();
                config.remove("quantization_config");
                json.put(ModelConfig.FILE_NAME, config);
            }
            Conversion.Summary summary = Conversion.run(plan, output.target(spec, in),
                    new Conversion.Files(folder, Set.of(HfOutputFolder.QUANT_CONFIG), json), QuantKernels.get());
            PlanReport.printSummary(spec.commandLine().getOut(), "dequantized", in, output.out, summary,
                    List.of(d.modules().size() + " " + d.format().cliName() + " module(s) decoded to " + dtype.name().toLowerCase()), output.json);
        }
        return 0;
    }
}
