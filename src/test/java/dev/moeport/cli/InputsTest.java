package dev.moeport.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.moeport.MoeportException;
import dev.moeport.format.HubCache;
import dev.moeport.testing.Shared;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** What an input argument may be: a file beside its output, a hub cache folder, a cached org/name. */
class InputsTest {
    private static final Path QWEN = Shared.fixture("qwen3_moe/hf");

    @TempDir
    Path tmp;

    /**
     * A hub cache as huggingface_hub lays it out (file_download.py: refs/main holds the commit,
     * snapshots/COMMIT holds the files), with an older snapshot beside that refs/main does not name.
     */
    private Path hubWithQwen() throws Exception {
        Path model = tmp.resolve("hub/models--Qwen--Qwen3-Tiny");
        Files.createDirectories(model.resolve("refs"));
        Files.writeString(model.resolve("refs/main"), "0123abcd\n");
        Files.createDirectories(model.resolve("snapshots/ffff0000"));
        Path snapshot = Files.createDirectories(model.resolve("snapshots/0123abcd"));
        try (var files = Files.list(QWEN)) {
            for (Path f : files.toList()) {
                Files.createSymbolicLink(snapshot.resolve(f.getFileName()), f);
            }
        }
        return model;
    }

    @Test
    void aHubCacheFolderIsItsMainSnapshot() throws Exception {
        Path model = hubWithQwen();
        assertEquals(model.resolve("snapshots/0123abcd"), HubCache.resolve(model.toString(), Map.of()));
        CliRun r = CliRun.of("inspect", model.toString());
        assertEquals(0, r.code(), r.err());
        assertEquals(CliRun.of("inspect", QWEN.toString()).out().lines().skip(1).toList(), r.out().lines().skip(1).toList());
    }

    @Test
    void aRepositoryIdIsLookedUpInTheCacheOnly() throws Exception {
        Path model = hubWithQwen();
        Path snapshot = model.resolve("snapshots/0123abcd");
        assertEquals(snapshot, HubCache.resolve("Qwen/Qwen3-Tiny", Map.of("HF_HUB_CACHE", tmp.resolve("hub").toString())));
        assertEquals(snapshot, HubCache.resolve("Qwen/Qwen3-Tiny", Map.of("HF_HOME", tmp.toString())));
        MoeportException missing = assertThrows(MoeportException.class,
                () -> HubCache.resolve("Qwen/Qwen3-Absent", Map.of("HF_HUB_CACHE", tmp.resolve("hub").toString())));
        assertTrue(missing.getMessage().contains("not in the Hugging Face cache (" + tmp.resolve("hub") + ")")
                && missing.getMessage().contains("never downloads"), missing.getMessage());
        // Not in the cache through the command line: a usage error naming the argument, no stack trace.
        CliRun r = CliRun.of("inspect", "Qwen/Qwen3-Absent-" + ProcessHandle.current().pid());
        assertEquals(Main.EXIT_USAGE, r.code());
        assertTrue(r.err().contains("never downloads") && !r.err().contains("\tat "), r.err());
    }

    @Test
    void aRefsMainWithoutItsSnapshotIsReported() throws Exception {
        Path model = hubWithQwen();
        Files.writeString(model.resolve("refs/main"), "deadbeef");
        MoeportException e = assertThrows(MoeportException.class, () -> HubCache.resolve(model.toString(), Map.of()));
        assertTrue(e.getMessage().contains("deadbeef"), e.getMessage());
    }

    @Test
    void aSingleFileMayHaveItsOutputFolderBesideIt() throws Exception {
        Path folder = Files.createDirectories(tmp.resolve("model"));
        Path file = folder.resolve("model.safetensors");
        Files.copy(QWEN.resolve("model-00003-of-00003.safetensors"), file);
        Files.copy(QWEN.resolve("config.json"), folder.resolve("config.json"));
        CliRun beside = CliRun.of("quantize", "--format", "fp8", "--in", file.toString(), "--out", folder.resolve("out").toString());
        assertEquals(0, beside.code(), beside.err());
        // The folder that holds the file is a true overlap: an overwrite would destroy the input.
        CliRun same = CliRun.of("quantize", "--format", "fp8", "--in", file.toString(), "--out", folder.toString(), "--overwrite");
        assertEquals(Main.EXIT_FAILURE, same.code());
        assertTrue(same.err().contains("apart from the input"), same.err());
        assertTrue(Files.exists(file));
    }

    @Test
    void aPatternThatMatchesNothingIsReported() {
        CliRun r = CliRun.of("quantize", "--format", "fp8", "--in", QWEN.toString(), "--out", tmp.resolve("q").toString(),
                "--exclude", "*.self_attn.[qkv]_proj", "--exclude", "*.self_atn.*", "--include", "*.layers.[!9].*");
        assertEquals(0, r.code(), r.err());
        assertEquals(List.of("moeport: warning: --exclude '*.self_atn.*' matches no linear layer's weight of " + QWEN),
                r.err().lines().filter(l -> l.contains("warning")).toList());
    }

    @Test
    void quantizeWithoutAConfigIsRefusedUnlessAskedFor() throws Exception {
        Path folder = Files.createDirectories(tmp.resolve("bare"));
        Files.copy(QWEN.resolve("model-00003-of-00003.safetensors"), folder.resolve("model.safetensors"));
        CliRun refused = CliRun.of("quantize", "--format", "fp8", "--in", folder.toString(), "--out", tmp.resolve("q").toString());
        assertEquals(Main.EXIT_FAILURE, refused.code());
        assertEquals(List.of("moeport: error: " + folder + ": no config.json beside the checkpoint; without it the output has no"
                + " quantization_config and serving engines cannot load it. Put the model's config.json there, or give --no-config"),
                refused.err().lines().toList());
        assertTrue(!Files.exists(tmp.resolve("q")), "nothing written");
        CliRun asked = CliRun.of("quantize", "--format", "fp8", "--in", folder.toString(), "--out", tmp.resolve("q").toString(), "--no-config");
        assertEquals(0, asked.code(), asked.err());
        assertTrue(Files.exists(tmp.resolve("q/hf_quant_config.json")) && !Files.exists(tmp.resolve("q/config.json")));
    }
}
