package dev.moeport.cli;

import dev.moeport.MoeportException;
import dev.moeport.Warnings;
import dev.moeport.arch.Architecture;
import dev.moeport.arch.Architectures;
import dev.moeport.arch.ModelConfig;
import dev.moeport.convert.Calibration;
import dev.moeport.convert.ExportMapper;
import dev.moeport.convert.HfOutputFolder;
import dev.moeport.convert.MappedTensor;
import dev.moeport.convert.McoreLayout;
import dev.moeport.convert.ModeloptState;
import dev.moeport.convert.OutputPlanner;
import dev.moeport.convert.QuantSelection;
import dev.moeport.format.Checkpoint;
import dev.moeport.format.Checkpoints;
import dev.moeport.format.safetensors.SafetensorsCheckpoint;
import dev.moeport.plan.Plan;
import dev.moeport.quant.QuantFormat;
import dev.moeport.tensor.DType;
import java.io.PrintWriter;
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
        name = "export",
        sortOptions = false,
        mixinStandardHelpOptions = true,
        description = {
            "Converts a Megatron-Core checkpoint to a Hugging Face one that transformers and serving engines " +
                "load, optionally quantized on the way.",
            "",
            "The mapping follows the architecture's rule table (see --list-architectures): renames, fused QKV" +
                " split into q/k/v, per-expert slicing of grouped experts (TEGroupedMLP weight0..N-1, " +
                "SequentialMLP local_experts, or one stacked [E, out, in] tensor), vocabulary padding trimmed. " +
                "_extra_state and ModelOpt quantizer state are not copied; calibrated amax values feed the " +
                "scales. Any input tensor no rule uses, and any expected tensor that is missing, is an error (see" +
                " --allow-unmapped).",
            "",
            "The plan (every output tensor, its source regions and transform) is built before a byte is " +
                "written; --dry-run prints it. Then it runs on --threads workers, streaming: no tensor is held in" +
                " memory.",
            ""
        },
        footerHeading = "%nExamples:%n",
        footer = {
            "  moeport export --in mcore/ --hf-config hf/ --out out/",
            "  moeport export --in mcore/ --hf-config hf/ --out out-nvfp4/ --format nvfp4 --exclude '*mixer.[qkvo]_proj'",
            "  moeport export --in mcore/ --hf-config hf/ --out x/ --dry-run --json | jq '.tensors | length'",
            "  moeport export --in /shared/mcore --hf-config /shared/hf --out /shared/out --part 3/8   # machine 3 of 8",
            "  sbatch --array=0-7 scripts/slurm/moeport-array.sbatch export --in ... --out /shared/out  # a Slurm job array"
        })
final class ExportCommand implements Callable<Integer> {
    @Spec
    CommandSpec spec;

    @Option(names = "--in", converter = CheckpointPath.class, paramLabel = "CKPT", description = "The Megatron-Core checkpoint: safetensors (a file, an index or a folder) or torch_dist (a checkpoint folder or its iter_NNNNNNN/).")
    Path in;

    @Option(names = "--hf-config", converter = CheckpointPath.class, paramLabel = "HF_DIR",
            description = "The Hugging Face folder of the same architecture: config.json (sizes, layer kinds) and tokenizer files, copied to the output."
                    + " Of a multimodal model (Llama4ForConditionalGeneration, Qwen3_5MoeForConditionalGeneration), its vision tower and projector"
                    + " are copied from the weights here.")
    Path hfConfig;

    @Mixin
    OutputOptions output;

    @Option(names = "--flavor", paramLabel = "FLAVOR", defaultValue = "modelopt",
            description = "How the output describes its quantization: modelopt (Model Optimizer's hf_quant_config.json and quant_method modelopt, read by vLLM, SGLang and TensorRT-LLM) or transformers (the layouts transformers loads: fp8_pb as its fine-grained fp8, the layout DeepSeek-V3 publishes, with weight_scale_inv; mxfp8 likewise; mxfp4 as GPT-OSS publishes its experts, *_blocks and *_scales) or compressed-tensors (llm-compressor's layout, which vLLM loads: fp8, fp8_pc and fp8_pb as float-quantized, nvfp4 as nvfp4-pack-quantized, mxfp4 as mxfp4-pack-quantized). Default: ${DEFAULT-VALUE}.")
    String flavorName;

    @Option(names = "--format", paramLabel = "FORMAT", converter = FormatConverter.class,
            description = "Quantize linear weights: ${COMPLETION-CANDIDATES}. Default: the recipe of a Model Optimizer-quantized checkpoint (its modelopt_state/), else no quantization.", completionCandidates = FormatConverter.Names.class)
    QuantFormat format;

    @Option(names = "--recipe", paramLabel = "FILE", description = "Mixed precision: a JSON file of rules {\"rules\": [{\"modules\": GLOB, \"format\": FORMAT}, ...]},"
            + " the first rule matching an HF module giving its format (bf16: keep it); modules no rule matches stay unquantized."
            + " Written as Model Optimizer's MIXED_PRECISION (or compressed-tensors' config groups).")
    Path recipeFile;

    @Option(names = "--dtype", paramLabel = "DTYPE", converter = DtypeConverter.class,
            description = "Cast unquantized floating-point weights to bf16, f16 or f32 (round to nearest even); A_log, D, dt_bias and the router's expert bias keep theirs.")
    DType dtype;

    @Option(names = "--exclude", paramLabel = "GLOB", description = "Keep matching HF modules unquantized (repeatable): '*' matches any text, '[qkv]' one of those letters, e.g. '*.mixer.[qkvo]_proj'.")
    List<String> exclude = new ArrayList<>();

    @Option(names = "--include", paramLabel = "GLOB", description = "Quantize only matching HF modules (repeatable). Default exclusions still apply.")
    List<String> include = new ArrayList<>();

    @Option(names = "--arch", paramLabel = "NAME", description = "Architecture, when config.json does not say (see --list-architectures).")
    String arch;

    @Option(names = "--allow-unmapped", description = "Warn about input tensors no rule uses instead of failing.")
    boolean allowUnmapped;

    @Option(names = "--list-architectures", description = "List the supported architectures and exit.")
    boolean listArchitectures;

    @Override
    public Integer call() {
        PrintWriter out = spec.commandLine().getOut();
        if (listArchitectures) {
            Architectures.all().forEach(a -> out.println(a.name() + "  " + String.join(", ", Architectures.classes(a))));
            return 0;
        }
        require(in != null, "--in");
        require(hfConfig != null, "--hf-config");
        if (format == null && recipeFile == null && (!include.isEmpty() || !exclude.isEmpty())) {
            throw new picocli.CommandLine.ParameterException(spec.commandLine(), "--include and --exclude choose what --format quantizes; give --format");
        }
        output.requireOut(spec);
        ModelConfig file = ModelConfig.load(hfConfig);
        Architecture architecture = Architectures.of(file, arch);
        ModelConfig config = architecture.textConfig(file);
        // A multimodal wrapper's vision tower and projector are no part of the Megatron-Core language model: they are copied
        // from the weights in --hf-config, as Model Optimizer's Megatron export copies them from the pretrained folder
        // (modelopt/torch/export/unified_export_megatron.py, load_multimodal_components).
        Path configFolder = OutputOptions.folderOf(hfConfig);
        try (Checkpoint original = architecture.wrapper() != null && SafetensorsCheckpoint.recognizes(configFolder) ? Checkpoints.open(configFolder) : null) {
            return Pipeline.run(spec, output, "exported", in, List.of(in, hfConfig), checkpoint -> plan(checkpoint, architecture, file, config, original));
        }
    }

    private Pipeline.Planned plan(Checkpoint checkpoint, Architecture architecture, ModelConfig file, ModelConfig config, Checkpoint original) {
        if (!McoreLayout.isMcore(checkpoint.tensors().keySet())) {
            throw new MoeportException(in + ": not a Megatron-Core checkpoint (no decoder.* tensors); export reads Megatron-Core"
                    + " (for Hugging Face checkpoints see quantize, convert, import)");
        }
        List<String> notes = new ArrayList<>();
        QuantFormat format = this.format;
        ModeloptState recipe = format == null && recipeFile == null ? ModeloptState.beside(in) : null;
        if (recipe != null) {
            format = recipe.format();
            notes.add("quantized as " + format.cliName() + ": the recipe of Model Optimizer " + recipe.version() + " in "
                    + ModeloptState.FOLDER + "/ (--format overrides it)");
        }
        dev.moeport.convert.Flavor flavor = FormatConverter.flavor(spec, flavorName, format, recipeFile != null);
        dev.moeport.convert.Recipe mixed = FormatConverter.recipe(spec, recipeFile, this.format, flavor);
        output.warmUpAhead(checkpoint, mixed != null ? mixed.formats() : format != null ? List.of(format) : List.of());
        McoreLayout.Canonical canonical = McoreLayout.normalize(checkpoint);
        ExportMapper.Result mapped = ExportMapper.map(architecture, config, canonical.tensors(), in);
        notes.addAll(mapped.requireMapped(in, architecture, allowUnmapped, "wrong --hf-config or expert count? "));
        Calibration calibration = format == null && mixed == null ? Calibration.NONE : Calibration.read(canonical.quantizerState(), canonical.tensors().keySet());
        // The recipe's disabled quantizers (output layer, router, a whole MLP-only recipe's attention) stay unquantized.
        List<String> excluded = recipe == null ? exclude : recipe.unquantizedModules(mapped.tensors());
        QuantSelection selection = QuantSelection.of(architecture.quantizationExclusions(config), include, excluded);
        OutputPlanner planner = new OutputPlanner(mixed == null ? format : null, dtype, selection, calibration).withFlavor(flavor).withRecipe(mixed);
        List<MappedTensor> tensors = new ArrayList<>(mapped.tensors());
        if (original != null) {
            original.tensors().forEach((name, t) -> {
                if (architecture.carries(name)) {
                    tensors.add(MappedTensor.identity(name, t));
                }
            });
            notes.addAll(HfInputs.outsideLanguageModel(architecture, original.tensors().keySet(), "copied from --hf-config"));
        }
        if (architecture.wrapper() != null && tensors.size() == mapped.tensors().size()) {
            notes.add("no " + architecture.wrapper().carriedList() + " tensors in " + OutputOptions.folderOf(hfConfig)
                    + " to copy: the output holds the language model of " + architecture.wrapper().hfClass() + " only");
        }
        OutputPlanner.Planned planned = planner.plan(tensors);
        selection.unmatched().forEach(p -> Warnings.warn(p + " matches no linear layer's weight of " + in));
        planned.requireQuantizedModules();
        // config.json is copied as it is unless the output changes what it says: quantization, dtype.
        Map<String, com.fasterxml.jackson.databind.JsonNode> json = new LinkedHashMap<>();
        var modelConfig = file.json();
        boolean changed = modelConfig.remove("quantization_config") != null;
        if (dtype != null) {
            for (String key : List.of("dtype", "torch_dtype")) {
                if (modelConfig.has(key)) {
                    modelConfig.put(key, switch (dtype) {
                        case BF16 -> "bfloat16";
                        case F16 -> "float16";
                        default -> "float32";
                    });
                    changed = true;
                }
            }
        }
        if (format != null || mixed != null) {
            json.putAll(flavor.files(format, modelConfig, planned, Main.Version.number()));
        } else if (changed) {
            json.put(ModelConfig.FILE_NAME, modelConfig);
        }
        notes.addAll(planned.notes());
        Plan plan = Plan.of(planned.jobs(), output.maxShardSize)
                .withFiles(HfOutputFolder.files(OutputOptions.folderOf(hfConfig), Set.of(HfOutputFolder.QUANT_CONFIG), json));
        return new Pipeline.Planned(plan, notes);
    }

    private void require(boolean present, String option) {
        if (!present) {
            throw new picocli.CommandLine.ParameterException(spec.commandLine(), "Missing required option: '" + option + "'");
        }
    }
}
