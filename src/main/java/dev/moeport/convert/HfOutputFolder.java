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
 * says {@code --overwrite}; then the earlier checkpoint is replaced only once the new one is complete.
 * Every file is written under a hidden temporary name and renamed into place, so a run that dies
 * leaves nothing that looks complete.
 */
public final class HfOutputFolder {
    public static final String QUANT_CONFIG = "hf_quant_config.json";
    private static final ObjectMapper JSON = new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT);

    private HfOutputFolder() {}

    /**
     * The checkpoint files an existing output folder held before an {@code --overwrite} run. They stay
     * until the new checkpoint is complete: a failed run leaves the old one as it was.
     */
    public record Earlier(List<Path> files) {
        /** Removes the earlier index and quantization config unless the new run rewrote them: done before the new shards go in place. */
        public void retireMetadata(Set<String> written) {
            retire(p -> !p.getFileName().toString().endsWith(".safetensors"), written);
        }

        /** Removes the earlier shards the new checkpoint did not replace: done once it is in place. */
        public void retireShards(Set<String> written) {
            retire(p -> p.getFileName().toString().endsWith(".safetensors"), written);
        }

        private void retire(java.util.function.Predicate<Path> which, Set<String> written) {
            for (Path p : files) {
                if (which.test(p) && !written.contains(p.getFileName().toString())) {
                    try {
                        Files.deleteIfExists(p);
                    } catch (IOException e) {
                        throw new MoeportException(p + ": cannot remove the earlier checkpoint's file (" + e.getMessage() + ")", e);
                    }
                }
            }
        }
    }

    /**
     * Creates {@code out} or checks it may be written: empty, or {@code overwrite} given; and neither the
     * same as nor inside (or around) any of the run's {@code inputs}, which an overwrite would destroy.
     * Leftovers of an interrupted run are removed; an earlier checkpoint is only listed.
     */
    public static Earlier prepare(Path out, boolean overwrite, List<Path> inputs) {
        try {
            Path target = canonical(out);
            for (Path input : inputs) {
                Path source = canonical(Files.isDirectory(input) ? input : input.toAbsolutePath().getParent());
                if (target.startsWith(source) || source.startsWith(target)) {
                    throw new MoeportException(out + ": the output folder must be apart from the input " + input);
                }
            }
            if (Files.exists(out) && !Files.isDirectory(out)) {
                throw new MoeportException(out + ": exists and is not a folder");
            }
            List<Path> earlier = new ArrayList<>();
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
                    if (SafetensorsWriter.isPartial(p)) {
                        Files.delete(p);
                    } else if (name.endsWith(".safetensors") || name.endsWith(".safetensors.index.json") || name.equals(QUANT_CONFIG)) {
                        earlier.add(p);
                    }
                }
            }
            Files.createDirectories(out);
            return new Earlier(earlier);
        } catch (IOException e) {
            throw new MoeportException(out + ": cannot prepare output folder (" + e.getMessage() + ")", e);
        }
    }

    /** The real path of {@code p}, or of its nearest existing ancestor with the rest appended. */
    private static Path canonical(Path p) throws IOException {
        Path absolute = p.toAbsolutePath().normalize();
        Path existing = absolute;
        while (existing != null && !Files.exists(existing)) {
            existing = existing.getParent();
        }
        return existing == null ? absolute : existing.toRealPath().resolve(existing.relativize(absolute));
    }

    /**
     * Copies the files of a Hugging Face model folder that are not weights (tokenizer, generation
     * config, code), except those named in {@code skip}: the folder's own files, not its subfolders nor
     * hidden files ({@code .git}, caches), streamed.
     */
    public static List<String> copyModelFiles(Path from, Path out, Set<String> skip, boolean fsync) {
        List<String> copied = new ArrayList<>();
        try (Stream<Path> files = Files.list(from)) {
            for (Path p : files.filter(Files::isRegularFile).sorted().toList()) {
                String name = p.getFileName().toString();
                if (skip.contains(name) || name.startsWith(".") || name.endsWith(".safetensors") || name.endsWith(".safetensors.index.json")
                        || name.endsWith(".bin") || name.endsWith(".pt") || name.endsWith(".pth")) {
                    continue;
                }
                SafetensorsWriter.copyAtomically(p, out.resolve(name), fsync);
                copied.add(name);
            }
        } catch (IOException e) {
            throw new MoeportException(from + ": cannot copy model files (" + e.getMessage() + ")", e);
        }
        return copied;
    }

    /** Writes {@code node} as indented JSON to {@code out/name}, atomically. */
    public static void writeJson(Path out, String name, JsonNode node, boolean fsync) {
        try {
            SafetensorsWriter.writeAtomically(out.resolve(name), (JSON.writeValueAsString(node) + "\n").getBytes(java.nio.charset.StandardCharsets.UTF_8), fsync);
        } catch (JsonProcessingException e) {
            throw new IllegalStateException(e);
        } catch (IOException e) {
            throw new MoeportException(out.resolve(name) + ": cannot write (" + e.getMessage() + ")", e);
        }
    }
}
