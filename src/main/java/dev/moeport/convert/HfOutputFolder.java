package dev.moeport.convert;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import dev.moeport.MoeportException;
import dev.moeport.arch.ModelConfig;
import dev.moeport.format.safetensors.SafetensorsWriter;
import dev.moeport.io.IoErrors;
import dev.moeport.util.PythonJson;
import java.io.IOException;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
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

    private static final String LOCK = ".moeport.lock";
    /** Weights in any format, and their indexes: never copied beside the new checkpoint. */
    private static final java.util.regex.Pattern WEIGHT_FILES = java.util.regex.Pattern.compile(
            ".*\\.(safetensors|bin|pt|pth|ckpt|h5|msgpack|gguf|onnx|npz|npy|pkl|distcp)|.*\\.index\\.json");

    /**
     * An output folder being written by this run: locked against other runs, with the checkpoint files
     * it held before an {@code --overwrite} run. Those stay until the new checkpoint is complete, so a
     * failed run leaves the old one as it was.
     */
    public static final class Prepared implements AutoCloseable {
        private final Path out;
        private final boolean created;
        private final List<Path> earlier;
        private final FileChannel lock;

        private Prepared(Path out, boolean created, List<Path> earlier, FileChannel lock) {
            this.out = out;
            this.created = created;
            this.earlier = earlier;
            this.lock = lock;
        }

        /** Removes the earlier checkpoint: done once the new one is written and about to go in place. */
        public void retireEarlier() {
            for (Path p : earlier) {
                try {
                    Files.deleteIfExists(p);
                } catch (IOException e) {
                    throw new MoeportException(p + ": cannot remove the earlier checkpoint's file (" + IoErrors.why(e) + ")", e);
                }
            }
        }

        /** After a failure: a folder this run created and left empty is removed. */
        public void discardIfEmpty() {
            if (!created) {
                return;
            }
            try (Stream<Path> s = Files.list(out)) {
                if (s.allMatch(p -> p.getFileName().toString().equals(LOCK))) {
                    close();
                    Files.deleteIfExists(out);
                }
            } catch (IOException e) {
                // Best effort: an empty folder left behind does not look like a checkpoint.
            }
        }

        /** Releases the lock. */
        @Override
        public void close() {
            try {
                if (lock.isOpen()) {
                    lock.close();
                    Files.deleteIfExists(out.resolve(LOCK));
                }
            } catch (IOException e) {
                // The lock file is hidden, and the next run takes the lock again.
            }
        }
    }

    /**
     * Creates {@code out} or checks it may be written: empty, or {@code overwrite} given; and neither the
     * same as nor inside (or around) any of the run's {@code inputs}, which an overwrite would destroy.
     * Takes a lock on it, so that two runs never write one folder. Leftovers of an interrupted run are
     * removed; an earlier checkpoint is only listed.
     */
    public static Prepared prepare(Path out, boolean overwrite, List<Path> inputs) {
        try {
            Path target = canonical(out);
            for (Path input : inputs) {
                // A folder must neither hold nor lie in the output; a single file only must not lie in it.
                Path source = canonical(input);
                if (source.startsWith(target) || Files.isDirectory(input) && target.startsWith(source)) {
                    throw new MoeportException(out + ": the output folder must be apart from the input " + input);
                }
            }
            if (Files.exists(out) && !Files.isDirectory(out)) {
                throw new MoeportException(out + ": exists and is not a folder");
            }
            boolean created = !Files.exists(out);
            Files.createDirectories(out);
            FileChannel lock = FileChannel.open(out.resolve(LOCK), StandardOpenOption.CREATE, StandardOpenOption.WRITE);
            if (lock.tryLock() == null) {
                lock.close();
                throw new MoeportException(out + ": another moeport run is writing to this folder");
            }
            Prepared prepared = new Prepared(out, created, new ArrayList<>(), lock);
            try {
                List<Path> entries;
                try (Stream<Path> s = Files.list(out)) {
                    entries = s.filter(p -> !p.getFileName().toString().equals(LOCK)).toList();
                }
                if (!entries.isEmpty() && !overwrite) {
                    throw new MoeportException(out + ": output folder exists and is not empty (give --overwrite to replace its checkpoint)");
                }
                for (Path p : entries) {
                    String name = p.getFileName().toString();
                    if (SafetensorsWriter.isPartial(p)) {
                        Files.delete(p);
                    } else if (name.endsWith(".safetensors") || name.endsWith(".safetensors.index.json") || name.equals(QUANT_CONFIG)) {
                        prepared.earlier.add(p);
                    }
                }
            } catch (RuntimeException | IOException e) {
                prepared.close();
                throw e;
            }
            return prepared;
        } catch (IOException e) {
            throw new MoeportException(out + ": cannot prepare output folder (" + IoErrors.why(e) + ")", e);
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
                if (skip.contains(name) || name.startsWith(".") || WEIGHT_FILES.matcher(name).matches()) {
                    continue;
                }
                SafetensorsWriter.copyAtomically(p, out.resolve(name), fsync);
                copied.add(name);
            }
        } catch (IOException e) {
            throw new MoeportException(from + ": cannot copy model files (" + IoErrors.why(e) + ")", e);
        }
        return copied;
    }

    /**
     * Writes {@code node} as indented JSON to {@code out/name}, atomically; config.json as transformers
     * writes it (json.dumps, indent 2, sorted keys), so that only what moeport changes differs.
     */
    public static void writeJson(Path out, String name, JsonNode node, boolean fsync) {
        try {
            String text = name.equals(ModelConfig.FILE_NAME) ? PythonJson.dumps(node, 2, true) : JSON.writeValueAsString(node);
            SafetensorsWriter.writeAtomically(out.resolve(name), (text + "\n").getBytes(java.nio.charset.StandardCharsets.UTF_8), fsync);
        } catch (JsonProcessingException e) {
            throw new IllegalStateException(e);
        } catch (IOException e) {
            throw new MoeportException(out.resolve(name) + ": cannot write (" + IoErrors.why(e) + ")", e);
        }
    }
}
