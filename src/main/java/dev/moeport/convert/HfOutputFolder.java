package dev.moeport.convert;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import dev.moeport.MoeportException;
import dev.moeport.arch.ModelConfig;
import dev.moeport.format.safetensors.SafetensorsWriter;
import dev.moeport.io.IoErrors;
import dev.moeport.io.OutputFolder;
import dev.moeport.plan.OutputFile;
import dev.moeport.util.PythonJson;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.stream.Stream;

/**
 * What a Hugging Face (or torch_dist) output folder holds besides the weights, and which of its files an
 * {@code --overwrite} run replaces; the folder's life (staging, switch, leftovers) is {@link OutputFolder}'s.
 */
public final class HfOutputFolder {
    public static final String QUANT_CONFIG = "hf_quant_config.json";
    private static final ObjectMapper JSON = new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT);

    private HfOutputFolder() {}

    /** Weights in any format, and their indexes: never copied beside the new checkpoint. */
    private static final java.util.regex.Pattern WEIGHT_FILES = java.util.regex.Pattern.compile(
            ".*\\.(safetensors|bin|pt|pth|ckpt|h5|msgpack|gguf|onnx|npz|npy|pkl|distcp)|.*\\.index\\.json");
    /** A torch_dist checkpoint's tracker file and iteration folders. */
    private static final java.util.regex.Pattern TORCH_DIST_FILES = java.util.regex.Pattern.compile(
            "latest_checkpointed_iteration\\.txt|iter_\\d+|release");

    /**
     * Whether a file or folder of an output folder belongs to the checkpoint an {@code --overwrite} run
     * replaces (weights, their index, quantization config, torch_dist's tracker and iteration folders),
     * besides those the new checkpoint holds under the same names. Other files (a README) stay.
     */
    public static boolean isCheckpointFile(String name) {
        return WEIGHT_FILES.matcher(name).matches() || TORCH_DIST_FILES.matcher(name).matches() || name.equals(QUANT_CONFIG);
    }

    /** The files that make a folder look like a finished checkpoint: an index, torch_dist's tracker file. */
    public static boolean marksComplete(String name) {
        return name.endsWith(".index.json") || name.equals("latest_checkpointed_iteration.txt");
    }

    /** Opens {@code out} for a run that writes a checkpoint: see {@link OutputFolder#open}. */
    public static OutputFolder open(Path out, boolean overwrite, List<Path> inputs, boolean fsync) {
        return OutputFolder.open(out, overwrite, inputs, HfOutputFolder::isCheckpointFile, HfOutputFolder::marksComplete, fsync);
    }

    /**
     * The files of the output besides the tensors: the files of the model folder {@code copyFrom} (null:
     * none) that are not weights (tokenizer, generation config, code), except those named in {@code skip} or
     * written instead; then {@code json}, the JSON files moeport writes, by name. Only the folder's own files
     * are copied, not its subfolders nor hidden files ({@code .git}, caches).
     */
    public static List<OutputFile> files(Path copyFrom, Set<String> skip, Map<String, JsonNode> json) {
        List<OutputFile> files = new ArrayList<>();
        if (copyFrom != null) {
            try (Stream<Path> listing = Files.list(copyFrom)) {
                for (Path p : listing.filter(Files::isRegularFile).sorted().toList()) {
                    String name = p.getFileName().toString();
                    if (skip.contains(name) || json.containsKey(name) || name.startsWith(".") || WEIGHT_FILES.matcher(name).matches()) {
                        continue;
                    }
                    files.add(new OutputFile.Copied(name, p, Files.size(p)));
                }
            } catch (IOException e) {
                throw new MoeportException(copyFrom + ": cannot list the model files to copy (" + IoErrors.why(e) + ")", e);
            }
        }
        json.forEach((name, node) -> files.add(new OutputFile.Written(name, jsonBytes(name, node))));
        return files;
    }

    /** Puts {@code file} into the folder {@code out}, atomically, streamed when it is a copy. */
    public static void write(Path out, OutputFile file, boolean fsync) {
        Path target = out.resolve(file.name());
        try {
            switch (file) {
                case OutputFile.Copied c -> SafetensorsWriter.copyAtomically(c.source(), target, fsync);
                case OutputFile.Written w -> SafetensorsWriter.writeAtomically(target, w.bytes(), fsync);
            }
        } catch (IOException e) {
            String what = file instanceof OutputFile.Copied c ? c.source() + ": cannot copy" : target + ": cannot write";
            throw new MoeportException(what + " (" + IoErrors.why(e) + ")", e);
        }
    }

    /** Writes {@code node} to {@code out/name} as {@link #jsonBytes} gives it, atomically. */
    public static void writeJson(Path out, String name, JsonNode node, boolean fsync) {
        write(out, new OutputFile.Written(name, jsonBytes(name, node)), fsync);
    }

    /**
     * {@code node} as indented JSON; config.json as transformers writes it (json.dumps, indent 2, sorted keys),
     * so that only what moeport changes differs.
     */
    private static byte[] jsonBytes(String name, JsonNode node) {
        try {
            String text = name.equals(ModelConfig.FILE_NAME) ? PythonJson.dumps(node, 2, true) : JSON.writeValueAsString(node);
            return (text + "\n").getBytes(java.nio.charset.StandardCharsets.UTF_8);
        } catch (JsonProcessingException e) {
            throw new IllegalStateException(e);
        }
    }
}
