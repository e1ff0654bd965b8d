package dev.moeport.convert;

import dev.moeport.MoeportException;
import dev.moeport.plan.AmaxSource;
import dev.moeport.plan.Job;
import dev.moeport.plan.OutputTensor;
import dev.moeport.plan.Piece;
import dev.moeport.quant.QuantFormat;
import dev.moeport.tensor.DType;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.Map;
import java.util.List;

/**
 * Turns mapped tensors into jobs: quantize the weights the selection picks (with their scales), cast
 * to {@code --dtype} what may be cast, copy the rest. Shared by export, quantize and import.
 */
public final class OutputPlanner {
    private final QuantFormat format;
    private final DType castTo;
    private final QuantSelection selection;
    private final Calibration calibration;
    private java.util.function.Predicate<String> float32 = name -> false;
    private Flavor flavor = Flavor.MODELOPT;
    private Recipe recipe;

    /**
     * @param format the quantization format, or null for none
     * @param castTo the dtype of unquantized floating-point weights, or null to keep each tensor's own
     */
    public OutputPlanner(QuantFormat format, DType castTo, QuantSelection selection, Calibration calibration) {
        this.format = format;
        this.castTo = castTo;
        this.selection = selection;
        this.calibration = calibration;
    }

    /** How the quantized output names its scales (Model Optimizer's flavor by default). */
    public OutputPlanner withFlavor(Flavor flavor) {
        this.flavor = flavor;
        return this;
    }

    /** Quantizes each module to the format {@code recipe} gives it (mixed precision), instead of one format. */
    public OutputPlanner withRecipe(Recipe recipe) {
        this.recipe = recipe;
        return this;
    }

    /** Tensors written in f32 whatever their input dtype (Megatron keeps the router's expert_bias in f32). */
    public OutputPlanner inFloat32(java.util.function.Predicate<String> names) {
        this.float32 = names;
        return this;
    }

    /**
     * The jobs, and what the quantization did.
     *
     * @param quantizing whether the run was asked to quantize (a format or a recipe)
     * @param formats the format of each quantized HF module, in order
     * @param unquantizedModules HF module names of linear weights left unquantized (the quantization config's {@code ignore} list)
     * @param withInputScale the quantized modules that got a static {@code input_scale} (from calibration)
     * @param fusedExpertsKept fused expert tensors (GPT-OSS) kept unquantized
     * @param flavor how the output describes its quantization
     */
    public record Planned(List<Job> jobs, boolean quantizing, java.util.SequencedMap<String, QuantFormat> formats, List<String> unquantizedModules,
                          java.util.Set<String> withInputScale, int fusedExpertsKept, Flavor flavor) {

        /** HF module names that were quantized. */
        public List<String> quantizedModules() {
            return List.copyOf(formats.keySet());
        }

        /** The formats used, in the order of their first module. */
        public List<QuantFormat> usedFormats() {
            return formats.values().stream().distinct().toList();
        }

        /** Whether more than one format was used (Model Optimizer's MIXED_PRECISION). */
        public boolean mixed() {
            return usedFormats().size() > 1;
        }

        /** The modules of {@code format}, in order. */
        public List<String> modulesOf(QuantFormat format) {
            return formats.entrySet().stream().filter(e -> e.getValue() == format).map(java.util.Map.Entry::getKey).toList();
        }

        /** Refuses a quantizing run that quantizes nothing: the output would claim a quantization it does not hold. */
        public void requireQuantizedModules() {
            if (quantizing && formats.isEmpty()) {
                throw new MoeportException("no linear weight is left to quantize (check --include, --exclude and the recipe)");
            }
        }

        /** Whether every quantized module got a static {@code input_scale} (from calibration): the config then says so. */
        public boolean staticInputScales() {
            return !formats.isEmpty() && withInputScale.size() == formats.size();
        }

        /** Whether every module of {@code format} got a static {@code input_scale}. */
        public boolean staticInputScales(QuantFormat format) {
            List<String> modules = modulesOf(format);
            return !modules.isEmpty() && withInputScale.containsAll(modules);
        }

        /** What a user should know about the quantization, one line each. */
        public List<String> notes() {
            List<String> notes = new ArrayList<>();
            if (!quantizing) {
                return notes;
            }
            String counts = String.join(", ", usedFormats().stream().map(f -> modulesOf(f).size() + " module(s) quantized to " + f.cliName()).toList());
            notes.add((counts.isEmpty() ? "no module quantized" : counts) + ", " + unquantizedModules.size() + " linear module(s) kept unquantized");
            long uncalibratedFp8 = flavor == Flavor.MODELOPT
                    ? formats.entrySet().stream().filter(e -> e.getValue() == QuantFormat.FP8 && !withInputScale.contains(e.getKey())).count() : 0;
            if (uncalibratedFp8 > 0) {
                notes.add(uncalibratedFp8 + " fp8 module(s) without a calibrated input amax get no input_scale, which vLLM's Model Optimizer"
                        + " FP8 loader needs (it computes garbage without one): calibrate with Model Optimizer and import with"
                        + " --keep-quantized, or write --flavor compressed-tensors (FP8 with dynamic activation scales)");
            }
            long dynamic = formats.entrySet().stream().filter(e -> e.getValue().quantizesActivations() && !withInputScale.contains(e.getKey())).count()
                    - uncalibratedFp8;
            if (dynamic > 0) {
                notes.add(dynamic + " module(s) without a calibrated input amax get no input_scale:"
                        + " engines must quantize their activations dynamically (calibrate with Model Optimizer for static scales)");
            }
            if (fusedExpertsKept > 0) {
                notes.add(fusedExpertsKept + " fused expert tensor(s) (GPT-OSS layout) kept unquantized and listed as such");
            }
            return notes;
        }
    }

    public Planned plan(List<MappedTensor> tensors) {
        List<Job> jobs = new ArrayList<>();
        java.util.SequencedMap<String, QuantFormat> formats = new java.util.LinkedHashMap<>();
        List<String> unquantizedModules = new ArrayList<>();
        java.util.Set<String> withInputScale = new java.util.HashSet<>();
        int fusedExpertsKept = 0;
        Map<String, AmaxSource.SharedAmax> sharedAmaxes = new HashMap<>();
        boolean quantizing = format != null || recipe != null;
        boolean fusedExpertsOnly = format != null && flavor.quantizesFusedExpertsOnly(format);
        for (MappedTensor t : tensors) {
            if (fusedExpertsOnly && QuantSelection.isFusedExperts(t.name(), t.rank()) && selection.quantizesFusedExperts(t.name())
                    && isQuantizable(t.dtype())) {
                jobs.add(GptOssMxfp4.quantize(t, castTo != null ? castTo : t.dtype()));
                formats.put(t.name(), format);
                continue;
            }
            QuantFormat f = quantizing && !fusedExpertsOnly && selection.quantizes(t.name(), t.rank()) && isQuantizable(t.dtype()) && t.shape().numel() > 0
                    ? formatOf(QuantSelection.module(t.name())) : null;
            if (f != null) {
                Job.Quantize job = quantize(t, f, sharedAmaxes);
                jobs.add(job);
                formats.put(QuantSelection.module(t.name()), f);
                if (job.inputAmax() != null) {
                    withInputScale.add(QuantSelection.module(t.name()));
                }
                continue;
            }
            if (QuantSelection.isLinearWeight(t.name(), t.rank())) {
                unquantizedModules.add(QuantSelection.module(t.name()));
            } else if (quantizing && QuantSelection.isFusedExperts(t.name(), t.rank()) && !unquantizedModules.contains(parent(t.name()))) {
                // Experts stored fused (GPT-OSS) stay in their dtype: serving engines must be told so.
                unquantizedModules.add(parent(t.name()));
                fusedExpertsKept++;
            }
            DType target = float32.test(t.name()) && isQuantizable(t.dtype()) ? DType.F32
                    : castTo != null && !t.keepDtype() && isQuantizable(t.dtype()) ? castTo : t.dtype();
            OutputTensor out = new OutputTensor(t.name(), target, t.shape());
            jobs.add(target == t.dtype()
                    ? new Job.Copy(out, t.pieces(), copyKind(t))
                    : new Job.Cast(out, t.pieces(), t.dtype(), (transforms(t).isEmpty() ? "" : transforms(t) + ", ") + "cast " + t.dtype() + " -> " + target));
        }
        if (fusedExpertsOnly && formats.isEmpty()) {
            throw new MoeportException("--flavor transformers writes " + format.cliName() + " as GPT-OSS's fused experts (<experts>_blocks,"
                    + " <experts>_scales), the only MXFP4 layout transformers 5.17 loads, and the input has none left to quantize:"
                    + " use --flavor modelopt");
        }
        if (recipe != null) {
            recipe.requireEveryRuleMatched();
        }
        return new Planned(List.copyOf(jobs), quantizing, java.util.Collections.unmodifiableSequencedMap(formats), List.copyOf(unquantizedModules),
                java.util.Set.copyOf(withInputScale), fusedExpertsKept, flavor);
    }

    /** The format of a module the selection quantizes: the recipe's, else {@code --format}'s. */
    private QuantFormat formatOf(String module) {
        return recipe != null ? recipe.formatOf(module) : format;
    }

    /**
     * {@code copy} (same name), {@code rename}, or {@code gather rows} (a part of a tensor, or several put
     * together); or what is done to the sources on the way ({@code decode nvfp4}, {@code transpose}).
     */
    private static String copyKind(MappedTensor t) {
        if (!transforms(t).isEmpty()) {
            return transforms(t);
        }
        boolean whole = t.pieces().size() == 1 && t.pieces().getFirst() instanceof Piece.Source s && s.tensor().shape().equals(t.shape());
        return !whole ? "gather rows" : t.sources().equals(List.of(t.name())) ? "copy" : "rename";
    }

    /** What is done to the sources besides reading them, or "". */
    private static String transforms(MappedTensor t) {
        return t.pieces().stream().map(p -> p instanceof Piece.Source s ? s.tensor().transform() : null)
                .filter(java.util.Objects::nonNull).distinct().collect(java.util.stream.Collectors.joining("; "));
    }

    private static String parent(String name) {
        return name.substring(0, name.lastIndexOf('.'));
    }

    private Job.Quantize quantize(MappedTensor t, QuantFormat format, Map<String, AmaxSource.SharedAmax> sharedAmaxes) {
        String module = QuantSelection.module(t.name());
        long in = t.shape().dim(-1);
        if (format.padsWeight(in)) {
            // Padding would change the weight's shape, which loaders check against the config.
            throw new MoeportException("tensor '" + t.name() + "' has " + in + " columns, not a multiple of " + format.cliName() + "'s block of "
                    + format.blockSize() + " (keep it unquantized with --exclude)");
        }
        flavor.requireQuantizable(t.name(), format, t.shape());
        if (format.packsRowPairs() && t.shape().dim(-2) % 2 != 0) {
            throw new MoeportException("tensor '" + t.name() + "' has an odd number of rows (" + t.shape().dim(-2) + "); "
                    + format.cliName() + " packs two rows a byte (keep it unquantized with --exclude)");
        }
        Float weightAmax = calibration.weightAmax(t.sources());
        // Only formats that quantize activations with a static scale carry one.
        Float inputAmax = format.quantizesActivations() ? calibration.inputAmax(t.sources()) : null;
        long experts = t.rank() > 2 ? t.shape().numel() / (t.shape().dim(-2) * t.shape().dim(-1)) : 1;
        AmaxSource amax = !format.usesTensorAmax() ? new AmaxSource.None()
                : weightAmax != null ? new AmaxSource.Calibrated(weightAmax)
                // fp8 scales a stack of experts expert by expert; nvfp4's global scale covers the whole tensor.
                : format.scaleIsTensorScale() && experts > 1 ? new AmaxSource.PerExpert()
                : t.amaxGroup() != null ? new AmaxSource.Shared(sharedAmaxes.computeIfAbsent(t.amaxGroup(),
                        key -> new AmaxSource.SharedAmax(key, Piece.matrices(t.amaxPieces()))))
                : new AmaxSource.Own();
        return new Job.Quantize(format, t.shape(), t.dtype(), castTo != null ? castTo : t.dtype(), Piece.matrices(t.pieces()), amax, inputAmax,
                new OutputTensor(flavor.weightName(module, format), format.weightType(), format.weightShape(t.shape())),
                new OutputTensor(flavor.scaleName(module), format.scaleType(), flavor.scaleShape(format, t.shape())),
                format.hasScale2() ? new OutputTensor(flavor.scale2Name(module, format), DType.F32, dev.moeport.tensor.Shape.of()) : null,
                inputAmax != null ? new OutputTensor(flavor.inputScaleName(module, format), DType.F32, dev.moeport.tensor.Shape.of()) : null,
                flavor.reciprocalTensorScales(format));
    }

    private static boolean isQuantizable(DType t) {
        return t == DType.BF16 || t == DType.F16 || t == DType.F32;
    }
}
