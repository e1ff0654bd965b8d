package dev.moeport.convert;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import dev.moeport.MoeportException;
import dev.moeport.format.safetensors.SafetensorsWriter;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.Set;
import java.util.stream.Stream;

/**
 * The output folder of a conversion. It is refused when it exists with files in it, unless the user
 * says {@code --overwrite}; then earlier weights, index, quantization config and leftovers of an
 * interrupted run are removed first. Every file is written under a hidden temporary name and renamed
 * into place, so a run that dies leaves nothing that looks complete.
 */
public final class HfOutputFolder {
    public static final String QUANT_CONFIG = "hf_quant_config.json";
    private static final ObjectMapper JSON = new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT);

    private HfOutputFolder() {}

    /** Creates {@code out} or checks it may be written. */
    public static void prepare(Path out, boolean overwrite) {
        try {
            if (Files.exists(out) && !Files.isDirectory(out)) {
                throw new MoeportException(out + ": exists and is not a folder");
            }
            if (Files.isDirectory(out)) {
                List<Path> entries;
                try (Stream<Path> s = Files.list(out)) {
                    entries = s.toList();
                }
                if (!entries.isEmpty() && !overwrite) {
                    throw new MoeportException(out + ": output folder exists and is not empty (give --overwrite to replace its checkpoint)");
                }
                for (Path p : entries) {
                    String name = p.getFileName().toString();
                    if (name.endsWith(".safetensors") || name.endsWith(".safetensors.index.json") || name.equals(QUANT_CONFIG)
                            || SafetensorsWriter.isPartial(p)) {
                        Files.delete(p);
                    }
                }
            }
            Files.createDirectories(out);
        } catch (IOException e) {
            throw new MoeportException(out + ": cannot prepare output folder (" + e.getMessage() + ")", e);
        }
    }

    /**
     * Copies the files of a Hugging Face model folder that are not weights (tokenizer, generation
     * config, code), except those named in {@code skip}; subfolders too.
     */
    public static List<String> copyModelFiles(Path from, Path out, Set<String> skip) {
        List<String> copied = new ArrayList<>();
        try (Stream<Path> files = Files.walk(from)) {
            for (Path p : files.filter(Files::isRegularFile).sorted().toList()) {
                Path relative = from.relativize(p);
                String name = p.getFileName().toString();
                if (skip.contains(relative.toString()) || name.endsWith(".safetensors") || name.endsWith(".safetensors.index.json")
                        || name.endsWith(".bin") || name.endsWith(".pt") || name.endsWith(".pth") || SafetensorsWriter.isPartial(p)
                        || relative.startsWith(".")) {
                    continue;
                }
                Path target = out.resolve(relative.toString());
                Files.createDirectories(target.getParent());
                SafetensorsWriter.writeAtomically(target, Files.readAllBytes(p), false);
                copied.add(relative.toString());
            }
        } catch (IOException e) {
            throw new MoeportException(from + ": cannot copy model files (" + e.getMessage() + ")", e);
        }
        return copied;
    }

    /** Writes {@code node} as indented JSON to {@code out/name}, atomically. */
    public static void writeJson(Path out, String name, JsonNode node) {
        try {
            SafetensorsWriter.writeAtomically(out.resolve(name), (JSON.writeValueAsString(node) + "\n").getBytes(java.nio.charset.StandardCharsets.UTF_8), false);
        } catch (JsonProcessingException e) {
            throw new IllegalStateException(e);
        } catch (IOException e) {
            throw new MoeportException(out.resolve(name) + ": cannot write (" + e.getMessage() + ")", e);
        }
    }
}
