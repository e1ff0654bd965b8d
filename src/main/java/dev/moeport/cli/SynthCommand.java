package dev.moeport.cli;

import dev.moeport.arch.ModelConfig;
import dev.moeport.convert.Conversion;
import dev.moeport.convert.HfOutputFolder;
import dev.moeport.plan.Plan;
import dev.moeport.quant.QuantKernels;
import dev.moeport.synth.NemotronHSynth.Dims;
import dev.moeport.convert.McoreLayout;
import dev.moeport.synth.NemotronHSynth.Preset;
import dev.moeport.synth.NemotronHSynth;
import dev.moeport.util.Sizes;
import java.io.PrintWriter;
import java.nio.file.Path;
import java.util.List;
import java.util.Locale;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Mixin;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

@Command(
        name = "synth",
        sortOptions = false,
        mixinStandardHelpOptions = true,
        description = {
            "Writes a synthetic NemotronH checkpoint of any size, for demos, tests and benchmarks: OUT/mcore " +
                "(Megatron-Core tensors, deterministic pseudo-random BF16 values) and OUT/hf (the matching " +
                "config.json), ready for 'moeport export --in OUT/mcore --hf-config OUT/hf'.",
            "",
            "Presets: tiny (the fixture's dimensions, 6 MB), small (~270 MB), 30b-layer (one Mamba, one " +
                "attention and one MoE layer at Nemotron-3 30B-A3B scale, ~4 GB; add layers with --pattern).",
            ""
        },
        footerHeading = "%nExamples:%n",
        footer = {
            "  moeport synth --preset small --out /tmp/synth",
            "  moeport synth --preset 30b-layer --pattern 'M*EEE' --out /data/synth-9gb   # ~9 GB",
            "  moeport synth --preset tiny --experts 16 --experts-layout sequential --out /tmp/t"
        })
final class SynthCommand implements Callable<Integer> {
    @Spec
    CommandSpec spec;

    @Option(names = "--preset", paramLabel = "NAME", defaultValue = "small", description = "tiny, small or 30b-layer (default: ${DEFAULT-VALUE}).")
    String preset;

    @Option(names = "--pattern", paramLabel = "LAYERS", description = "Layer kinds, one character a layer: M Mamba, * attention, - MLP, E MoE.")
    String pattern;

    @Option(names = "--hidden", paramLabel = "N", description = "Hidden size.")
    Integer hidden;

    @Option(names = "--experts", paramLabel = "N", description = "Routed experts per MoE layer.")
    Integer experts;

    @Option(names = "--expert-size", paramLabel = "N", description = "Expert FFN size (moe_intermediate_size).")
    Integer expertSize;

    @Option(names = "--vocab", paramLabel = "N", description = "Vocabulary size.")
    Integer vocab;

    @Option(names = "--experts-layout", paramLabel = "LAYOUT", defaultValue = "te",
            description = "te (TEGroupedMLP weight0..N-1), sequential (local_experts.N) or stacked (one [E, out, in] tensor); default ${DEFAULT-VALUE}.")
    String expertsLayout;

    @Option(names = "--seed", defaultValue = "0", description = "Seed of the pseudo-random values (default ${DEFAULT-VALUE}).")
    long seed;

    @Mixin
    OutputOptions output;

    @Override
    public Integer call() {
        output.requireOut(spec);
        if (output.part != null || output.parts != null || output.resume) {
            throw new picocli.CommandLine.ParameterException(spec.commandLine(), "synth writes in one process: --part, --parts and --resume apply to"
                    + " export, import, quantize, dequantize and convert");
        }
        Dims dims;
        try {
            dims = Preset.fromCliName(preset).dims;
        } catch (IllegalArgumentException e) {
            throw new picocli.CommandLine.ParameterException(spec.commandLine(), e.getMessage());
        }
        if (pattern != null) {
            dims = dims.withPattern(pattern);
        }
        dims = dims.with(hidden, experts, expertSize, vocab);
        McoreLayout.Experts layout = McoreLayout.Experts.fromCliName(expertsLayout);
        if (layout == null) {
            throw new picocli.CommandLine.ParameterException(spec.commandLine(), "--experts-layout must be te, sequential or stacked");
        }
        Plan plan = Plan.of(NemotronHSynth.mcoreJobs(dims, layout, seed), output.maxShardSize);
        PrintWriter out = spec.commandLine().getOut();
        if (output.dryRun) {
            output.printPlan(out, plan, spec);
            return 0;
        }
        Path mcore = output.out.resolve("mcore");
        Path hf = output.out.resolve("hf");
        try (dev.moeport.io.OutputFolder folder = HfOutputFolder.open(hf, output.overwrite, List.of(), output.fsync)) {
            HfOutputFolder.writeJson(folder.staging(), ModelConfig.FILE_NAME, NemotronHSynth.hfConfig(dims), output.fsync);
            folder.commit();
        }
        Conversion.Target target = output.target(spec);
        Conversion.Summary s = Conversion.run(plan, new Conversion.Target(mcore, output.overwrite, List.of(), target.threads(), target.fsync(),
                target.bar(), dev.moeport.plan.Part.WHOLE, false, List.of(), target.writeBehind()), QuantKernels.get(), Conversion.SAFETENSORS);
        if (output.json) {
            PlanReport.printSummary(out, "synthesized", null, mcore, s, List.of(), true);
        } else {
            out.printf(Locale.ROOT, "synthesized %d tensors (%s, layers %s, %d experts of %d) in %.2f s: %s and %s%n", s.tensors(),
                    Sizes.format(s.outputBytes()), dims.pattern(), dims.experts(), dims.expertSize(), s.elapsed().toNanos() / 1e9,
                    mcore, hf.resolve(ModelConfig.FILE_NAME));
        }
        return 0;
    }
}
