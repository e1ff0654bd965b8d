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
import dev.moeport.convert.MegatronSpec;
import dev.moeport.convert.TorchDistOutput;
import dev.moeport.convert.OutputPlanner;
import dev.moeport.convert.QuantSelection;
import dev.moeport.convert.QuantizedCheckpoint;
import dev.moeport.plan.Plan;
import dev.moeport.quant.QuantKernels;
import dev.moeport.tensor.DType;
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
            "Converts a Hugging Face checkpoint to a Megatron-Core checkpoint: the export's rule table read the " +
                "other way. q/k/v are interleaved into linear_qkv by KV group, gate and up merged into [gate ; " +
                "up], norms moved to their fused MCore names, the vocabulary padded to a multiple of " +
                "--vocab-multiple, and the per-expert tensors merged into the --experts layout. Quantized input " +
                "(any format moeport writes, GPT-OSS MXFP4, DeepSeek FP8) is decoded on the way (to bf16, or " +
                "--dtype); with --keep-quantized, an fp8 or nvfp4 input's calibration is kept as quantizer state.",
            "",
            "The output is what Megatron-LM's --load reads (--ckpt-format torch_dist, the default): OUT/latest_checkpointed_iteration.txt " +
                "and OUT/iter_0000000/ with the keys, shapes, dtypes and chunks Megatron-Core's own save writes from one rank " +
                "(Megatron reshards on load, so any TP/PP/EP layout loads it). Layers with the same tensors are stacked under one " +
                "key [L, ...] as Megatron-Core does for homogeneous models; give --layer-keys per-layer when your model is " +
                "configured with a per-layer MoE pattern (e.g. a --moe-layer-freq list). Norm names follow --megatron-spec. " +
                "--ckpt-format safetensors writes the tensors under Megatron-Core names in safetensors shards instead.",
            ""
        },
        footerHeading = "%nExamples:%n",
        footer = {
            "  moeport import --in hf/ --out mcore/                       # torch_dist, Transformer Engine names",
            "  moeport import --in hf/ --out mcore/ --megatron-spec local  # for models built with the local spec",
            "  moeport import --in hf-nvfp4/ --out mcore-seq/ --experts sequential --dtype bf16",
            "  moeport import --in /shared/hf --out /shared/mcore --part 2/4 --resume   # machine 2 of 4, reusing its finished files"
        })
final class ImportCommand implements Callable<Integer> {
    @Spec
    CommandSpec spec;

    @Option(names = "--in", required = true, converter = CheckpointPath.class, paramLabel = "HF_DIR", description = "The Hugging Face folder (weights and config.json).")
    Path in;

    @Mixin
    OutputOptions output;

    @Option(names = "--ckpt-format", paramLabel = "FORMAT", defaultValue = "torch_dist",
            description = "torch_dist (Megatron-LM's checkpoint folder) or safetensors (Megatron-Core names in safetensors shards). Default: ${DEFAULT-VALUE}.")
    String ckptFormat;

    @Option(names = "--megatron-spec", paramLabel = "SPEC", defaultValue = "te",
            description = "The layer spec whose norm names to write: te (Transformer Engine: pre-norms fused into linear_qkv/linear_fc1) or local (Megatron-Core modules only). Default: ${DEFAULT-VALUE}.")
    String megatronSpec;

    @Option(names = "--layer-keys", paramLabel = "MODE", defaultValue = "auto",
            description = "torch_dist keys of decoder layers: stacked (decoder.layers.<name> [L, ...]), per-layer (decoder.layers.<i>.<name>), or auto: stacked when every layer holds the same tensors. Default: ${DEFAULT-VALUE}.")
    String layerKeys;

    @Option(names = "--experts", paramLabel = "LAYOUT",
            description = "With --ckpt-format safetensors, the expert layout: te (TEGroupedMLP linear_fc1.weight{e}, the default), sequential (local_experts.{e}) or stacked (one [E, out, in] tensor). torch_dist stores experts as Megatron does, whatever their module.")
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
        boolean torchDist = switch (ckptFormat.toLowerCase(Locale.ROOT)) {
            case "torch_dist" -> true;
            case "safetensors" -> false;
            default -> throw new picocli.CommandLine.ParameterException(spec.commandLine(), "--ckpt-format must be torch_dist or safetensors");
        };
        if (torchDist && experts != null) {
            throw new picocli.CommandLine.ParameterException(spec.commandLine(), "--experts applies to --ckpt-format safetensors; torch_dist stores experts as Megatron does");
        }
        MegatronSpec naming = switch (megatronSpec.toLowerCase(Locale.ROOT)) {
            case "te" -> MegatronSpec.TRANSFORMER_ENGINE;
            case "local" -> MegatronSpec.LOCAL;
            default -> throw new picocli.CommandLine.ParameterException(spec.commandLine(), "--megatron-spec must be te or local");
        };
        if (!torchDist && naming != MegatronSpec.TRANSFORMER_ENGINE) {
            throw new picocli.CommandLine.ParameterException(spec.commandLine(), "--megatron-spec local applies to --ckpt-format torch_dist");
        }
        if (!List.of("auto", "stacked", "per-layer").contains(layerKeys)) {
            throw new picocli.CommandLine.ParameterException(spec.commandLine(), "--layer-keys must be auto, stacked or per-layer");
        }
        McoreLayout.Experts layout = McoreLayout.Experts.fromCliName(torchDist ? "stacked" : experts == null ? "te" : experts);
        if (layout == null) {
            throw new picocli.CommandLine.ParameterException(spec.commandLine(), "--experts must be te, sequential or stacked");
        }
        Path folder = OutputOptions.folderOf(in);
        ModelConfig file = ModelConfig.load(folder);
        Architecture architecture = Architectures.of(file, arch);
        ModelConfig config = architecture.textConfig(file);
        return Pipeline.run(spec, output, "imported", in, List.of(in), checkpoint -> {
            if (McoreLayout.isMcore(checkpoint.tensors().keySet())) {
                throw new MoeportException(in + ": already a Megatron-Core checkpoint; import reads Hugging Face checkpoints");
            }
            QuantizedCheckpoint.Decoded decoded = QuantizedCheckpoint.decode(checkpoint.tensors(), QuantizedCheckpoint.declaredFormat(folder),
                    dtype != null ? dtype : DType.BF16, QuantKernels.get());
            ExportMapper.Result all = ImportMapper.map(architecture, config, HfLayout.toPerExpert(architecture, decoded.tensors()), layout,
                    new Transform.ImportOptions(vocabMultiple), in);
            // A multimodal wrapper's vision tower has no place in Megatron-Core's GPT model: said, not an error.
            ExportMapper.Result mapped = new ExportMapper.Result(all.tensors(),
                    all.unmapped().stream().filter(n -> !architecture.carries(n)).toList());
            List<String> notes = new ArrayList<>(mapped.requireMapped(in, architecture, allowUnmapped, ""));
            notes.addAll(HfInputs.outsideLanguageModel(architecture, all.unmapped(), "not imported (export copies them back from --hf-config)"));
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
            OutputPlanner planner = new OutputPlanner(null, dtype, QuantSelection.of(List.of(), List.of(), List.of()), Calibration.NONE)
                    .inFloat32(name -> name.endsWith(".router.expert_bias"));
            Plan plan = Plan.of(planner.plan(tensors).jobs(), output.maxShardSize);
            return new Pipeline.Planned(plan, notes, torchDist ? TorchDistOutput.writer(tensors, naming, layerKeys,
                    TorchDistOutput.sections(architecture, config)) : Conversion.SAFETENSORS);
        });
    }
}
