package dev.moeport.convert;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.moeport.cli.CliRun;
import dev.moeport.format.Checkpoint;
import dev.moeport.format.Checkpoints;
import dev.moeport.tensor.Tensor;
import dev.moeport.testing.Shared;
import dev.moeport.testing.TestCheckpoints;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.BeforeAll;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * Export reads a Mamba mixer's in_proj saved by section, as Megatron-Core's MambaMixer.sharded_state_dict saves it
 * (megatron/core/ssm/mamba_mixer.py: in_proj.weight split into z, x, B, C, dt of d_inner, d_inner, ngroups*d_state,
 * ngroups*d_state, nheads rows), whatever the checkpoint's format; a missing or misshapen section is one line.
 */
class SavedSectionsTest {
    private static final Path HF = Shared.fixture("nemotron_h_tiny/hf");
    private static final String IN_PROJ = "decoder.layers.0.mixer.in_proj.weight";

    @TempDir
    static Path tmp;
    private static Path whole;
    /** The sections' rows, from config.json on their own. */
    private static final Map<String, Long> ROWS = new LinkedHashMap<>();

    @BeforeAll
    static void importWhole() throws Exception {
        whole = CliRun.succeeding("import", "--in", HF.toString(), "--ckpt-format", "safetensors", "--out", tmp.resolve("whole").toString());
        JsonNode c = new ObjectMapper().readTree(HF.resolve("config.json").toFile());
        long inner = c.get("mamba_num_heads").asLong() * c.get("mamba_head_dim").asLong();
        long groupState = c.get("n_groups").asLong() * c.get("ssm_state_size").asLong();
        ROWS.put("z", inner);
        ROWS.put("x", inner);
        ROWS.put("B", groupState);
        ROWS.put("C", groupState);
        ROWS.put("dt", c.get("mamba_num_heads").asLong());
    }

    /** The whole import with layer 0's in_proj as the sections of {@code rows} (in order), leaving out {@code omit}. */
    private static Path sectioned(String name, Map<String, Long> rows, String omit) throws Exception {
        Path out = tmp.resolve(name);
        try (Checkpoint ckpt = Checkpoints.open(whole)) {
            List<TestCheckpoints.Entry> entries = new ArrayList<>(TestCheckpoints.entries(ckpt, n -> !n.equals(IN_PROJ)));
            Tensor inProj = ckpt.tensor(IN_PROJ);
            long at = 0;
            for (Map.Entry<String, Long> section : rows.entrySet()) {
                if (!section.getKey().equals(omit)) {
                    entries.add(TestCheckpoints.Entry.of(IN_PROJ + "." + section.getKey(), inProj.narrow(at, section.getValue(), "s")));
                }
                at += section.getValue();
            }
            assertEquals(inProj.shape().dim(0), at, "the sections cover in_proj");
            TestCheckpoints.write(out, entries, 1L << 30);
        }
        return out;
    }

    @Test
    void sectionsExportAsTheWholeTensor() throws Exception {
        Path back = CliRun.succeeding("export", "--in", sectioned("sections", ROWS, null).toString(), "--hf-config", HF.toString(),
                "--out", tmp.resolve("back").toString());
        TestCheckpoints.assertSameTensors(HF, back);
    }

    @Test
    void aMissingSectionIsNamed() throws Exception {
        CliRun r = CliRun.of("export", "--in", sectioned("no-dt", ROWS, "dt").toString(), "--hf-config", HF.toString(),
                "--out", tmp.resolve("no-dt-out").toString());
        assertEquals(1, r.code(), r.err());
        assertTrue(r.err().contains("missing tensor '" + IN_PROJ + ".dt'"), r.err());
        assertEquals(1, r.err().strip().lines().count(), r.err());
    }

    @Test
    void sectionsOfOtherSizesAreRefused() throws Exception {
        Map<String, Long> shifted = new LinkedHashMap<>(ROWS);
        shifted.put("B", ROWS.get("B") + 1);
        shifted.put("C", ROWS.get("C") - 1);
        CliRun r = CliRun.of("export", "--in", sectioned("shifted", shifted, null).toString(), "--hf-config", HF.toString(),
                "--out", tmp.resolve("shifted-out").toString());
        assertEquals(1, r.code(), r.err());
        assertTrue(r.err().contains(IN_PROJ + ".B") && r.err().contains("implies " + ROWS.get("B") + " rows"), r.err());
        assertEquals(1, r.err().strip().lines().count(), r.err());
    }
}
