package dev.moeport.format.safetensors;

import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.moeport.MoeportException;
import dev.moeport.format.Checkpoint;
import dev.moeport.io.IoErrors;
import dev.moeport.tensor.Tensor;
import dev.moeport.tensor.TensorView;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.LinkedHashSet;
import java.util.List;
import java.util.Map;
import java.util.SequencedMap;
import java.util.stream.Stream;

/**
 * A safetensors checkpoint: one file, or shards listed by a {@code *.safetensors.index.json}, seen as
 * one map of tensors. Every shard is mapped in one shared arena, so the views may be read from any
 * thread until {@link #close()}.
 */
public final class SafetensorsCheckpoint implements Checkpoint {
    public static final String INDEX_NAME = "model.safetensors.index.json";
    private static final ObjectMapper JSON =
            new ObjectMapper().enable(JsonParser.Feature.STRICT_DUPLICATE_DETECTION)
            .enable(com.fasterxml.jackson.databind.DeserializationFeature.FAIL_ON_TRAILING_TOKENS);

    private final Path location;
    private final Arena arena;
    private final List<SafetensorsFile> files;
    private final SequencedMap<String, Tensor> tensors;

    private SafetensorsCheckpoint(Path location, Arena arena, List<SafetensorsFile> files, SequencedMap<String, Tensor> tensors) {
        this.location = location;
        this.arena = arena;
        this.files = files;
        this.tensors = Collections.unmodifiableSequencedMap(tensors);
    }

    /** True when {@code path} looks like a safetensors checkpoint: a file, an index, or a folder holding either. */
    public static boolean recognizes(Path path) {
        if (Files.isDirectory(path)) {
            try (Stream<Path> s = Files.list(path)) {
                return s.anyMatch(p -> p.getFileName().toString().endsWith(".safetensors"));
            } catch (IOException e) {
                return false;
            }
        }
        String name = path.getFileName().toString();
        return name.endsWith(".safetensors") || name.endsWith(".safetensors.index.json");
    }

    /**
     * Opens a {@code .safetensors} file, an index file, or a folder: its {@code model.safetensors.index.json}
     * (or single other {@code *.safetensors.index.json}) if there is one, else all its {@code *.safetensors} files.
     */
    public static SafetensorsCheckpoint open(Path path) {
        if (!Files.exists(path)) {
            throw new MoeportException(path + ": no such file or folder");
        }
        Arena arena = Arena.ofShared();
        try {
            List<SafetensorsFile> files = new ArrayList<>();
            Map<String, String> weightMap = null;
            Path index = Files.isDirectory(path) ? findIndex(path) : path.toString().endsWith(".json") ? path : null;
            if (index != null) {
                weightMap = readWeightMap(index);
                Path dir = index.toAbsolutePath().getParent();
                for (String shard : new LinkedHashSet<>(weightMap.values())) {
                    Path shardPath = dir.resolve(shard);
                    if (!Files.isRegularFile(shardPath)) {
                        throw new MoeportException(index + ": names shard '" + shard + "', which does not exist");
                    }
                    files.add(SafetensorsFile.open(shardPath, arena));
                }
            } else if (Files.isDirectory(path)) {
                List<Path> shards = listShards(path);
                if (shards.isEmpty()) {
                    throw new MoeportException(path + ": no *.safetensors files and no index in this folder");
                }
                for (Path shard : shards) {
                    files.add(SafetensorsFile.open(shard, arena));
                }
            } else {
                files.add(SafetensorsFile.open(path, arena));
            }
            SequencedMap<String, Tensor> tensors = merge(files, weightMap, index);
            return new SafetensorsCheckpoint(path, arena, files, tensors);
        } catch (RuntimeException e) {
            arena.close();
            throw e;
        }
    }

    private static Path findIndex(Path dir) {
        Path standard = dir.resolve(INDEX_NAME);
        if (Files.isRegularFile(standard)) {
            return standard;
        }
        try (Stream<Path> s = Files.list(dir)) {
            List<Path> indexes = s.filter(p -> p.getFileName().toString().endsWith(".safetensors.index.json")).sorted().toList();
            if (indexes.size() > 1) {
                throw new MoeportException(dir + ": several index files (" + indexes.stream().map(p -> p.getFileName().toString()).toList()
                        + "); give the one to use");
            }
            return indexes.isEmpty() ? null : indexes.getFirst();
        } catch (IOException e) {
            throw new MoeportException(dir + ": cannot list folder (" + IoErrors.why(e) + ")", e);
        }
    }

    private static List<Path> listShards(Path dir) {
        try (Stream<Path> s = Files.list(dir)) {
            return s.filter(p -> p.getFileName().toString().endsWith(".safetensors") && Files.isRegularFile(p)).sorted().toList();
        } catch (IOException e) {
            throw new MoeportException(dir + ": cannot list folder (" + IoErrors.why(e) + ")", e);
        }
    }

    /** Ten times the index of the largest published model (DeepSeek-V3's is 9 MB); more would only fill the heap. */
    private static final long MAX_INDEX_BYTES = 100_000_000L;

    private static Map<String, String> readWeightMap(Path index) {
        JsonNode root;
        try {
            if (!Files.isRegularFile(index)) {
                throw new MoeportException(index + ": not a regular file (a pipe or a device?)");
            }
            if (Files.size(index) > MAX_INDEX_BYTES) {
                throw new MoeportException(index + ": index of " + Files.size(index) + " bytes is larger than the limit of "
                        + MAX_INDEX_BYTES + " bytes");
            }
            root = JSON.readTree(Files.readAllBytes(index));
        } catch (NoSuchFileException e) {
            throw new MoeportException(index + ": no such file");
        } catch (IOException e) {
            throw new MoeportException(index + ": not a valid JSON index (" + firstLine(e.getMessage()) + ")");
        }
        JsonNode map = root == null ? null : root.get("weight_map");
        if (map == null || !map.isObject()) {
            throw new MoeportException(index + ": index has no \"weight_map\" object");
        }
        Map<String, String> weightMap = new LinkedHashMap<>();
        for (Map.Entry<String, JsonNode> e : map.properties()) {
            if (!e.getValue().isTextual()) {
                throw new MoeportException(index + ": weight_map entry '" + e.getKey() + "' is not a file name");
            }
            String shard = e.getValue().textValue();
            if (shard.isEmpty() || shard.equals(".") || shard.equals("..") || shard.indexOf('/') >= 0 || shard.indexOf('\0') >= 0) {
                throw new MoeportException(index + ": weight_map entry '" + e.getKey() + "' names '" + shard
                        + "', which is not a file of the index's folder");
            }
            weightMap.put(e.getKey(), shard);
        }
        return weightMap;
    }

    private static SequencedMap<String, Tensor> merge(List<SafetensorsFile> files, Map<String, String> weightMap, Path index) {
        SequencedMap<String, Tensor> tensors = new LinkedHashMap<>();
        for (SafetensorsFile file : files) {
            for (TensorView t : file.tensors().values()) {
                if (tensors.putIfAbsent(t.name(), t) instanceof TensorView earlier) {
                    throw new MoeportException("tensor '" + t.name() + "' is in two shards: " + earlier.file() + " and " + file.path());
                }
                if (weightMap != null && !file.path().getFileName().toString().equals(weightMap.get(t.name()))) {
                    throw new MoeportException(index + ": shard " + file.path().getFileName() + " holds tensor '" + t.name()
                            + "', which the index " + (weightMap.containsKey(t.name()) ? "places in " + weightMap.get(t.name()) : "does not list"));
                }
            }
        }
        if (weightMap != null) {
            for (Map.Entry<String, String> e : weightMap.entrySet()) {
                if (!tensors.containsKey(e.getKey())) {
                    throw new MoeportException(index + ": names tensor '" + e.getKey() + "' in shard " + e.getValue()
                            + ", which does not hold it");
                }
            }
        }
        return tensors;
    }

    private static String firstLine(String s) {
        return s == null ? "" : s.lines().findFirst().orElse("");
    }

    @Override
    public Path location() {
        return location;
    }

    @Override
    public String format() {
        return "safetensors";
    }

    @Override
    public SequencedMap<String, Tensor> tensors() {
        return tensors;
    }

    /** The shard files, in index order. */
    public List<SafetensorsFile> files() {
        return files;
    }

    /** The metadata of the first shard (HF writes the same in every shard). */
    public Map<String, String> metadata() {
        return files.getFirst().metadata();
    }

    @Override
    public void close() {
        arena.close();
    }
}
