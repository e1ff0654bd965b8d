package dev.moeport.cli;

import dev.moeport.MoeportException;
import dev.moeport.Warnings;
import dev.moeport.arch.Architecture;
import dev.moeport.arch.Architectures;
import dev.moeport.arch.ModelConfig;
import dev.moeport.convert.Calibration;
import dev.moeport.convert.HfLayout;
import dev.moeport.convert.HfOutputFolder;
import dev.moeport.convert.HfQuantizeMapper;
import dev.moeport.convert.McoreLayout;
import dev.moeport.convert.OutputPlanner;
import dev.moeport.convert.QuantSelection;
import dev.moeport.plan.Plan;
import dev.moeport.quant.QuantFormat;
import dev.moeport.tensor.Tensor;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
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
        name = "quantize",
        sortOptions = false,
        mixinStandardHelpOptions = true,
        description = {
            "Quantizes a Hugging Face checkpoint, bit-exact with NVIDIA Model Optimizer, into a new one that " +
                "serving engines load: weight, weight_scale, weight_scale_2 (nvfp4) and input_scale (when " +
                "calibrated) per module, hf_quant_config.json, and config.json with quantization_config.",
            "",
            "Every linear weight (a *.weight of 2 or more dimensions) is quantized except embeddings, " +
                "lm_head, routers (*.gate, *.router), Mamba conv1d, and what --exclude names; 1-D tensors (norms," +
                " biases) and everything else are copied unchanged. q/k/v and gate/up projections share one " +
                "per-tensor scale. Calibrated amax values that ModelOpt leaves beside a weight " +
                "(<module>.weight_quantizer._amax, <module>.input_quantizer._amax) are used instead of the " +
                "weight's own amax; they are not copied. Formats (QUANT_FORMATS.md): fp8, fp8_pc, fp8_pb, nvfp4, " +
                "mxfp4, mxfp8, int8_wo, int4_g128.",
            ""
        },
        footerHeading = "%nExamples:%n",
        footer = {
            "  moeport quantize --format nvfp4 --in hf/ --out hf-nvfp4/",
            "  moeport quantize --format fp8 --in hf/ --out hf-fp8/ --exclude '*self_attn*' --threads 8"
        })
final class QuantizeCommand implements Callable<Integer> {
    @Spec
    CommandSpec spec;

    @Option(names = "--flavor", paramLabel = "FLAVOR", defaultValue = "modelopt",
            description = "How the output describes its quantization: modelopt (Model Optimizer's hf_quant_config.json and quant_method modelopt, read by vLLM, SGLang and TensorRT-LLM) or transformers (the layouts transformers loads: fp8_pb as its fine-grained fp8, the layout DeepSeek-V3 publishes, with weight_scale_inv; mxfp8 likewise; mxfp4 as GPT-OSS publishes its experts, *_blocks and *_scales) or compressed-tensors (llm-compressor's layout, which vLLM loads: fp8, fp8_pc and fp8_pb as float-quantized, nvfp4 as nvfp4-pack-quantized, mxfp4 as mxfp4-pack-quantized). Default: ${DEFAULT-VALUE}.")
    String flavorName;

    @Option(names = "--format", paramLabel = "FORMAT", converter = FormatConverter.class,
            description = "${COMPLETION-CANDIDATES} (or --recipe)", completionCandidates = FormatConverter.Names.class)
    QuantFormat format;

    @Option(names = "--recipe", paramLabel = "FILE", description = "Mixed precision: a JSON file of rules {\"rules\": [{\"modules\": GLOB, \"format\": FORMAT}, ...]},"
            + " the first rule matching a module giving its format (bf16: keep it), e.g. routed experts nvfp4 and attention fp8;"
            + " modules no rule matches stay unquantized. Written as Model Optimizer's MIXED_PRECISION (or compressed-tensors' config groups).")
    Path recipeFile;

    @Option(names = "--in", required = true, converter = CheckpointPath.class, paramLabel = "CKPT", description = "The Hugging Face checkpoint: a folder, index or .safetensors file.")
    Path in;

    @Mixin
    OutputOptions output;

    @Option(names = "--exclude", paramLabel = "GLOB", description = "Keep matching modules unquantized (repeatable; '*' matches anything).")
    List<String> exclude = new ArrayList<>();

    @Option(names = "--include", paramLabel = "GLOB", description = "Quantize only matching modules (repeatable). Default exclusions still apply.")
    List<String> include = new ArrayList<>();

    @Option(names = "--no-config", description = "Quantize a checkpoint that has no config.json beside it. The output then has no "
            + "config.json either (only hf_quant_config.json), and engines will need one with its quantization_config.")
    boolean noConfig;

    @Override
    public Integer call() {
        if (format == null && recipeFile == null) {
            throw new picocli.CommandLine.ParameterException(spec.commandLine(), "give --format or --recipe");
        }
        output.requireOut(spec);
        dev.moeport.convert.Flavor flavor = FormatConverter.flavor(spec, flavorName, format, recipeFile != null);
        dev.moeport.convert.Recipe recipe = FormatConverter.recipe(spec, recipeFile, format, flavor);
        Path folder = OutputOptions.folderOf(in);
        ModelConfig config = Files.exists(folder.resolve(ModelConfig.FILE_NAME)) ? ModelConfig.load(folder) : null;
        Architecture arch = config == null ? null : Architectures.find(config);
        // The rows read the text model's config; a multimodal wrapper's nests it, and its vision tower is copied as it is.
        ModelConfig text = arch == null ? config : arch.textConfig(config);
        return Pipeline.run(spec, output, "quantized", in, List.of(in), checkpoint -> {
            HfInputs.requireHfUnquantized(in, checkpoint);
            output.warmUpAhead(checkpoint, recipe != null ? recipe.formats() : List.of(format));
            if (config == null && !noConfig) {
                throw new MoeportException(folder + ": no " + ModelConfig.FILE_NAME + " beside the checkpoint; without it the output has no "
                        + "quantization_config and serving engines cannot load it. Put the model's config.json there, or give --no-config");
            }
            SequencedMap<String, Tensor> tensors = new LinkedHashMap<>();
            Map<String, Tensor> quantizerState = new LinkedHashMap<>();
            // Quantizer state is named like the weights: under the per-expert names when the weights are.
            checkpoint.tensors().forEach((name, t) -> {
                if (McoreLayout.isQuantizerState(name)) {
                    quantizerState.put(arch != null ? HfLayout.originalName(arch, name) : name, t);
                } else {
                    tensors.put(name, t);
                }
            });
            // Fused experts are quantized expert by expert, and written so, as Model Optimizer does.
            SequencedMap<String, Tensor> weights = arch != null ? HfLayout.toPerExpert(arch, tensors) : tensors;
            List<String> exclusions = arch != null ? arch.quantizationExclusions(text) : Architecture.COMMON_EXCLUSIONS;
            QuantSelection selection = QuantSelection.of(exclusions, include, exclude);
            OutputPlanner planner = new OutputPlanner(format, null, selection,
                    Calibration.read(quantizerState, weights.keySet())).withFlavor(flavor).withRecipe(recipe);
            OutputPlanner.Planned planned = planner.plan(HfQuantizeMapper.map(arch, text, weights));
            selection.unmatched().forEach(p -> Warnings.warn(p + " matches no linear layer's weight of " + in));
            planned.requireQuantizedModules();
            Plan plan = Plan.of(planned.jobs(), output.maxShardSize).withFiles(HfOutputFolder.files(folder, Set.of(),
                    flavor.files(format, config == null ? null : config.json(), planned, Main.Version.number())));
            List<String> notes = new ArrayList<>(planned.notes());
            if (arch != null) {
                notes.addAll(HfInputs.outsideLanguageModel(arch, tensors.keySet(), "copied unquantized"));
            }
            return new Pipeline.Planned(plan, notes);
        });
    }
}
