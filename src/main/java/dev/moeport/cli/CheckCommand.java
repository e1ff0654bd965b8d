package dev.moeport.cli;

import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.moeport.check.PreflightCheck;
import dev.moeport.format.Checkpoint;
import dev.moeport.format.Checkpoints;
import java.io.PrintWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.concurrent.Callable;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;

@Command(
        name = "check",
        sortOptions = false,
        mixinStandardHelpOptions = true,
        description = {
            "Pre-flight of a quantized Hugging Face checkpoint: what serving engines' loaders enforce or silently assume.",
            "",
            "Reports scales that are zero, NaN or infinite; gate/up (w1/w3) or q/k/v global and input scales that differ " +
                "(engines fuse them and keep one); experts missing a scale their siblings have; an exclusion list " +
                "(exclude_modules, modules_to_not_convert, ignore) naming quantized modules; quantization config keys " +
                "the engines require. One line per problem naming the tensor; exit 0 when clean, 1 otherwise."
        },
        footerHeading = "%nExamples:%n",
        footer = {
            "  moeport check out/nvfp4",
            "  moeport check out/nvfp4 --engine sglang --json | jq '.problems'"
        })
final class CheckCommand implements Callable<Integer> {
    @Spec
    CommandSpec spec;

    @Parameters(paramLabel = "CKPT", converter = CheckpointPath.class, description = "The quantized checkpoint folder.")
    Path path;

    @Option(names = "--engine", paramLabel = "ENGINE", description = "The engine to check for: ${COMPLETION-CANDIDATES} (default: ${DEFAULT-VALUE})."
            + " The quant_algo values its Model Optimizer loader accepts (vLLM's and TensorRT-LLM's, read in their sources), and"
            + " TensorRT-LLM's quant_cfg.json for mixed precision; the other checks apply to all three.")
    PreflightCheck.Engine engine = PreflightCheck.Engine.vllm;

    @Option(names = "--json", description = "Print JSON for scripts: the problems as {tensor, problem}.")
    boolean json;

    @Override
    public Integer call() {
        PrintWriter out = spec.commandLine().getOut();
        Path folder = Files.isDirectory(path) ? path : path.toAbsolutePath().getParent();
        List<PreflightCheck.Problem> problems;
        try (Checkpoint ckpt = Checkpoints.open(path)) {
            problems = PreflightCheck.run(ckpt, folder, engine);
        }
        if (json) {
            ObjectNode doc = Json.document();
            doc.put("checkpoint", Json.path(path));
            doc.put("engine", engine.name());
            doc.put("ok", problems.isEmpty());
            ArrayNode list = doc.putArray("problems");
            problems.forEach(p -> list.addObject().put("tensor", p.tensor()).put("problem", p.message()));
            Json.print(out, doc);
        } else {
            problems.forEach(out::println);
            out.println(path + ": " + (problems.isEmpty() ? "no problems found for " + engine : problems.size() + " problem(s) for " + engine));
        }
        return problems.isEmpty() ? 0 : 1;
    }
}
