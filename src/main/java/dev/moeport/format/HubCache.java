package dev.moeport.format;

import dev.moeport.MoeportException;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Map;
import java.util.regex.Pattern;

/**
 * Finds models in a Hugging Face hub cache, never downloading. The cache layout (huggingface_hub's
 * file_download.py and constants.py): {@code HUB/models--ORG--NAME/refs/main} holds the commit hash
 * of the main branch, whose files are in {@code HUB/models--ORG--NAME/snapshots/HASH/}. HUB is
 * {@code HF_HUB_CACHE}, else {@code HF_HOME/hub}, else {@code ~/.cache/huggingface/hub}
 * ({@code XDG_CACHE_HOME/huggingface/hub} when that is set).
 */
public final class HubCache {
    /** A repository id: org/name, with the characters the hub allows in each part. */
    private static final Pattern REPO_ID = Pattern.compile("[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*");

    private HubCache() {}

    /**
     * The checkpoint that {@code argument} names: a cache folder {@code models--ORG--NAME} becomes its
     * {@code refs/main} snapshot; an {@code ORG/NAME} that is no local path is looked up in the cache;
     * anything else is returned as given.
     */
    public static Path resolve(String argument, Map<String, String> env) {
        Path path = Path.of(argument);
        if (Files.exists(path)) {
            return isModelFolder(path) ? mainSnapshot(path) : path;
        }
        if (!REPO_ID.matcher(argument).matches()) {
            return path;
        }
        Path hub = hubFolder(env);
        Path model = hub.resolve("models--" + argument.replace("/", "--"));
        if (!Files.isDirectory(model)) {
            throw new MoeportException(argument + ": no such folder, and not in the Hugging Face cache (" + hub
                    + "); moeport never downloads: fetch it first, e.g. hf download " + argument);
        }
        return mainSnapshot(model);
    }

    static Path hubFolder(Map<String, String> env) {
        if (set(env.get("HF_HUB_CACHE"))) {
            return Path.of(env.get("HF_HUB_CACHE"));
        }
        if (set(env.get("HF_HOME"))) {
            return Path.of(env.get("HF_HOME"), "hub");
        }
        String cache = set(env.get("XDG_CACHE_HOME")) ? env.get("XDG_CACHE_HOME") : Path.of(System.getProperty("user.home"), ".cache").toString();
        return Path.of(cache, "huggingface", "hub");
    }

    private static boolean set(String value) {
        return value != null && !value.isEmpty();
    }

    private static boolean isModelFolder(Path path) {
        Path name = path.toAbsolutePath().normalize().getFileName();
        return name != null && name.toString().startsWith("models--") && Files.isDirectory(path.resolve("snapshots"));
    }

    private static Path mainSnapshot(Path model) {
        Path ref = model.resolve("refs").resolve("main");
        if (!Files.isRegularFile(ref)) {
            throw new MoeportException(model + ": a Hugging Face cache folder without refs/main; give one of its snapshots/<commit> folders");
        }
        try {
            String commit = Files.readString(ref, StandardCharsets.UTF_8).strip();
            Path snapshot = model.resolve("snapshots").resolve(commit);
            if (commit.isEmpty() || commit.contains("/") || !Files.isDirectory(snapshot)) {
                throw new MoeportException(ref + ": names commit '" + commit + "', which has no folder in " + model.resolve("snapshots")
                        + " (an incomplete download?)");
            }
            return snapshot;
        } catch (IOException e) {
            throw new MoeportException(ref + ": cannot read (" + e.getMessage() + ")");
        }
    }
}
