package dev.moeport.cli;

import java.io.PrintWriter;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Spec;

@Command(
        name = "demo",
        sortOptions = false,
        mixinStandardHelpOptions = true,
        description = {
            "The main job on a built-in example, end to end: synthesizes a NemotronH checkpoint in " +
                "Megatron-Core layout (moeport synth), then exports it to a quantized Hugging Face checkpoint " +
                "(moeport export), printing each command as it runs it and its summary. Reruns replace the demo " +
                "folder.",
            ""
        })
final class DemoCommand implements Callable<Integer> {
    @Spec
    CommandSpec spec;

    @Option(names = "--dir", paramLabel = "DIR", description = "Where to write (default: ${DEFAULT-VALUE}).",
            defaultValue = "${sys:java.io.tmpdir}/moeport-demo")
    Path dir;

    @Option(names = "--preset", paramLabel = "NAME", defaultValue = "small", description = "Size of the synthetic model: tiny, small or 30b-layer (default: ${DEFAULT-VALUE}).")
    String preset;

    @Option(names = "--format", paramLabel = "FORMAT", defaultValue = "nvfp4", description = "Quantization format of the export (default: ${DEFAULT-VALUE}).")
    String format;

    @Override
    public Integer call() {
        PrintWriter out = spec.commandLine().getOut();
        PrintWriter err = spec.commandLine().getErr();
        Path synth = dir.resolve("synth");
        Path export = dir.resolve("export-" + format);
        List<List<String>> steps = List.of(
                List.of("synth", "--preset", preset, "--out", synth.toString(), "--overwrite"),
                List.of("export", "--in", synth.resolve("mcore").toString(), "--hf-config", synth.resolve("hf").toString(),
                        "--out", export.toString(), "--format", format, "--overwrite"));
        for (List<String> step : steps) {
            out.println("$ moeport " + String.join(" ", step));
            out.flush();
            List<String> args = new ArrayList<>(step);
            int code = Main.run(out, err, args.toArray(String[]::new));
            if (code != 0) {
                return code;
            }
        }
        out.println("The Hugging Face checkpoint is in " + export + "; see it with: moeport inspect " + export + " --group");
        return 0;
    }
}
