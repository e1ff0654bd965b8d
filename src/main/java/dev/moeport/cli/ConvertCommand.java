package dev.moeport.cli;

import dev.moeport.MoeportException;
import dev.moeport.arch.Architecture;
import dev.moeport.arch.Architectures;
import dev.moeport.arch.ModelConfig;
import dev.moeport.convert.Calibration;
import dev.moeport.convert.HfLayout;
import dev.moeport.convert.HfOutputFolder;
import dev.moeport.convert.MappedTensor;
import dev.moeport.convert.OutputPlanner;
import dev.moeport.convert.QuantSelection;
import dev.moeport.plan.Plan;
import dev.moeport.tensor.Tensor;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.SequencedMap;
import java.util.Set;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

@Command(
        name = "convert",
        sortOptions = false,
        mixinStandardHelpOptions = true,
        description = {
            "Rewrites a Hugging Face checkpoint between transformers 5's two layouts: per-expert tensors " +
                "(experts.{e}.gate_proj.weight ...; what vLLM and older loaders read) and fused experts " +
                "(experts.gate_up_proj [E, 2I, H], experts.down_proj [E, H, I]; save_original_format=False), with" +
                " the other renames that layout brings (NemotronH model./backbone., Mixtral " +
                "mlp./block_sparse_moe.). Bytes are copied as they are: per-expert tensors are zero-copy slices " +
                "of the fused ones.",
            ""
        },
        footerHeading = "%nExamples:%n",
        footer = {
            "  moeport convert --in hf-fused/ --out hf/ --experts per-expert",
            "  moeport convert --in hf/ --out hf-fused/ --experts fused"
        })
final class ConvertCommand implements Callable<Integer> {
    @Spec
    CommandSpec spec;

    @Option(names = "--in", required = true, converter = CheckpointPath.class, paramLabel = "HF_DIR", description = "The Hugging Face folder (weights and config.json).")
    Path in;

    @Mixin
    OutputOptions output;

    @Option(names = "--experts", required = true, paramLabel = "LAYOUT", description = "per-expert or fused.")
    String experts;

    @Option(names = "--arch", paramLabel = "NAME", description = "Architecture, when config.json does not say.")
    String arch;

    @Override
    public Integer call() {
        output.requireOut(spec);
        boolean fused = switch (experts) {
            case "fused" -> true;
            case "per-expert" -> false;
            default -> throw new picocli.CommandLine.ParameterException(spec.commandLine(), "--experts must be per-expert or fused");
        };
        Path folder = OutputOptions.folderOf(in);
        ModelConfig config = ModelConfig.load(folder);
        Architecture architecture = Architectures.of(config, arch);
        if (architecture.hfFused().experts().isEmpty()) {
            throw new MoeportException(architecture.name() + " checkpoints have one expert layout only; there is nothing to convert");
        }
        return Pipeline.run(spec, output, "converted", in, List.of(in), checkpoint -> {
            HfInputs.requireHfUnquantized(in, checkpoint);
            SequencedMap<String, Tensor> perExpert = HfLayout.toPerExpert(architecture, checkpoint.tensors());
            List<MappedTensor> tensors = new ArrayList<>();
            if (fused) {
                tensors.addAll(HfLayout.toFused(architecture, perExpert));
            } else {
                perExpert.forEach((name, t) -> tensors.add(MappedTensor.identity(name, t)));
            }
            OutputPlanner planner = new OutputPlanner(null, null, QuantSelection.of(List.of(), List.of(), List.of()), Calibration.NONE);
            Plan plan = Plan.of(planner.plan(tensors).jobs(), output.maxShardSize).withFiles(HfOutputFolder.files(folder, Set.of(), Map.of()));
            List<String> notes = new ArrayList<>(List.of("experts " + (fused ? "fused" : "per expert") + " (" + architecture.name() + ")"));
            notes.addAll(HfInputs.outsideLanguageModel(architecture, perExpert.keySet(), "copied as they are"));
            return new Pipeline.Planned(plan, notes);
        });
    }
}
