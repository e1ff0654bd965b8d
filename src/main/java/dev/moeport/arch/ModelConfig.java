package dev.moeport.arch;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.moeport.MoeportException;
import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;

/** A Hugging Face {@code config.json}: the sizes and layer layout the mapping rules need. */
public final class ModelConfig {
    public static final String FILE_NAME = "config.json";
    private static final ObjectMapper JSON = new ObjectMapper().enable(com.fasterxml.jackson.databind.DeserializationFeature.FAIL_ON_TRAILING_TOKENS);

    private final Path file;
    private final ObjectNode root;
    /** Where {@code root} lies in the file, for messages: "" or e.g. "text_config.". */
    private final String keyPrefix;

    private ModelConfig(Path file, ObjectNode root, String keyPrefix) {
        this.file = file;
        this.root = root;
        this.keyPrefix = keyPrefix;
    }

    /** Reads {@code config.json} from a Hugging Face model folder (or the file itself). */
    public static ModelConfig load(Path folderOrFile) {
        Path file = Files.isDirectory(folderOrFile) ? folderOrFile.resolve(FILE_NAME) : folderOrFile;
        try {
            JsonNode node = JSON.readTree(Files.readAllBytes(file));
            if (node == null || !node.isObject()) {
                throw new MoeportException(file + ": not a JSON object");
            }
            return new ModelConfig(file, (ObjectNode) node, "");
        } catch (NoSuchFileException e) {
            throw new MoeportException(file + ": no such file (expected the Hugging Face model folder, with its config.json)");
        } catch (IOException e) {
            throw new MoeportException(file + ": cannot read config (" + e.getMessage().lines().findFirst().orElse("") + ")");
        }
    }

    public Path file() {
        return file;
    }

    /** The JSON itself (a copy to edit, e.g. to add {@code quantization_config}). */
    public ObjectNode json() {
        return root.deepCopy();
    }

    /** The first entry of {@code architectures}, or {@code model_type} when there is none. */
    public String architecture() {
        JsonNode list = root.get("architectures");
        if (list != null && list.isArray() && !list.isEmpty() && list.get(0).isTextual()) {
            return list.get(0).textValue();
        }
        JsonNode type = root.get("model_type");
        return type != null && type.isTextual() ? type.textValue() : null;
    }

    /** The config nested under {@code key}, e.g. a multimodal {@code owner}'s {@code text_config}; messages name this file. */
    public ModelConfig nested(String key, String owner) {
        JsonNode node = root.get(key);
        if (node == null || !node.isObject()) {
            throw new MoeportException(file + ": a " + owner + " config needs the object \"" + key + "\" (its text model's config)");
        }
        return new ModelConfig(file, (ObjectNode) node, keyPrefix + key + ".");
    }

    public boolean has(String key) {
        JsonNode n = root.get(key);
        return n != null && !n.isNull();
    }

    public JsonNode get(String key) {
        return root.get(key);
    }

    /** A positive integer the rules cannot do without. */
    public long requireInt(String key) {
        JsonNode n = root.get(key);
        if (n == null || !n.canConvertToLong() || !n.isIntegralNumber() || n.longValue() < 0) {
            throw new MoeportException(file + ": needs the integer \"" + keyPrefix + key + "\"" + (n == null ? "" : " (found " + n + ")"));
        }
        return n.longValue();
    }

    public long intOr(String key, long fallback) {
        return has(key) ? requireInt(key) : fallback;
    }

    /** The first of {@code keys} that is present, as an integer. */
    public long requireIntOf(String... keys) {
        for (String k : keys) {
            if (has(k)) {
                return requireInt(k);
            }
        }
        throw new MoeportException(file + ": needs one of the integers " + keyPrefix + String.join(", " + keyPrefix, keys));
    }
}
