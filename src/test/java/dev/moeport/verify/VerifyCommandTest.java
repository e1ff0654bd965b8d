package dev.moeport.verify;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.moeport.cli.CliRun;
import dev.moeport.format.Checkpoint;
import dev.moeport.format.Checkpoints;
import dev.moeport.testing.Shared;
import dev.moeport.testing.TestCheckpoints.Entry;
import dev.moeport.testing.TestCheckpoints;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class VerifyCommandTest {
    private static final Path FIXTURE = Shared.fixture("nemotron_h_tiny");
    private static final Path HF = FIXTURE.resolve("hf");
    private static final String E0 = "backbone.layers.2.mixer.experts.0.up_proj.weight";
    private static final String E1 = "backbone.layers.2.mixer.experts.1.up_proj.weight";

    @TempDir
    Path tmp;

    private static JsonNode json(CliRun r) throws Exception {
        return new ObjectMapper().readTree(r.out());
    }

    @Test
    void identicalCheckpointsInAnyLayoutMatch() throws Exception {
        CliRun same = CliRun.of("verify", HF.toString(), HF.toString());
        assertEquals(0, same.code(), same.err());
        assertTrue(same.out().contains("identical: 71 of 71 common tensors"), same.out());
        // An MCore checkpoint is mapped to HF names with the config beside the other side.
        for (String layout : List.of("mcore_te", "mcore_seq")) {
            CliRun r = CliRun.of("verify", FIXTURE.resolve(layout).toString(), HF.toString(), "--json");
            assertEquals(0, r.code(), r.err());
            JsonNode report = json(r);
            assertTrue(report.get("match").asBoolean());
            assertEquals(71, report.get("tensors").size());
        }
    }

    @Test
    void equalValuesInAnotherDtypeAreReportedButAcceptedUnlessStrict() throws Exception {
        // The same weights in f32: every bf16 value is exactly representable, so only the dtypes differ.
        Path f32 = CliRun.succeeding("import", "--ckpt-format", "safetensors", "--in", HF.toString(), "--out", tmp.resolve("f32").toString(), "--dtype", "f32");
        CliRun r = CliRun.of("verify", HF.toString(), f32.toString());
        assertEquals(0, r.code(), r.out() + r.err());
        assertTrue(r.out().contains("; differing: 0;") && r.out().contains("dtype only: backbone.embeddings.weight BF16 vs F32"), r.out());
        CliRun strict = CliRun.of("verify", HF.toString(), f32.toString(), "--strict-dtype", "--json");
        assertEquals(3, strict.code(), strict.out());
        JsonNode report = json(strict);
        assertFalse(report.get("match").asBoolean());
        JsonNode weight = null;
        for (JsonNode t : report.get("tensors")) {
            if (t.get("name").asText().equals(E0)) {
                weight = t;
            }
        }
        assertEquals("BF16", weight.get("dtype_a").asText());
        assertEquals("F32", weight.get("dtype_b").asText());
        assertTrue(weight.get("dtype_only").asBoolean());
        assertFalse(weight.get("within_tolerance").asBoolean());
    }

    @Test
    void aTorchDistCheckpointComparesEqualToTheHfFolder() {
        CliRun r = CliRun.of("verify", "fixtures/torch_dist/nemotron_h_tiny", HF.toString());
        assertEquals(0, r.code(), r.err() + r.out());
        assertTrue(r.out().contains("identical: 71 of 71 common tensors"), r.out());
    }

    @Test
    void swappedExpertsAreReportedWithTheirErrorFigures() throws Exception {
        Path permuted = tmp.resolve("permuted");
        try (Checkpoint hf = Checkpoints.open(HF)) {
            List<Entry> entries = new ArrayList<>();
            for (Entry e : TestCheckpoints.entries(hf, n -> true)) {
                String source = e.name().equals(E0) ? E1 : e.name().equals(E1) ? E0 : e.name();
                entries.add(Entry.of(e.name(), hf.tensor(source)));
            }
            TestCheckpoints.write(permuted, entries, 1L << 30);
        }
        CliRun r = CliRun.of("verify", HF.toString(), permuted.toString(), "--json");
        assertEquals(3, r.code(), r.err());
        JsonNode report = json(r);
        assertFalse(report.get("match").asBoolean());
        List<String> differing = new ArrayList<>();
        report.get("tensors").forEach(t -> {
            if (!t.get("identical").asBoolean()) {
                differing.add(t.get("name").asText());
            }
        });
        assertEquals(List.of(E0, E1), differing);
        // Expected figures, computed here straight from the fixture's BF16 bits.
        double[] expected = figures(E0, E1);
        for (JsonNode t : report.get("tensors")) {
            if (t.get("name").asText().equals(E0)) {
                assertEquals(expected[0], t.get("max_abs_error").asDouble(), 0);
                assertEquals(expected[1], t.get("mean_abs_error").asDouble(), 1e-12);
                assertEquals(expected[2], t.get("snr_db").asDouble(), 1e-9);
            }
        }
        CliRun tolerant = CliRun.of("verify", HF.toString(), permuted.toString(), "--tolerance", "-10");
        assertEquals(0, tolerant.code(), tolerant.out());
    }

    /** max abs, mean abs and SNR (dB) of tensor b against reference a. */
    private static double[] figures(String a, String b) {
        try (Checkpoint hf = Checkpoints.open(HF); Arena arena = Arena.ofConfined()) {
            MemorySegment x = hf.tensor(a).bytes(arena);
            MemorySegment y = hf.tensor(b).bytes(arena);
            ValueLayout.OfShort bf16 = ValueLayout.JAVA_SHORT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
            long n = x.byteSize() / 2;
            double max = 0;
            double sum = 0;
            double signal = 0;
            double noise = 0;
            for (long i = 0; i < n; i++) {
                double va = Float.intBitsToFloat(x.getAtIndex(bf16, i) << 16);
                double vb = Float.intBitsToFloat(y.getAtIndex(bf16, i) << 16);
                max = Math.max(max, Math.abs(va - vb));
                sum += Math.abs(va - vb);
                signal += va * va;
                noise += (va - vb) * (va - vb);
            }
            return new double[] {max, sum / n, 10 * Math.log10(signal / noise)};
        }
    }

    @Test
    void aTruncatedCheckpointIsMissingTensors() throws Exception {
        Path truncated = tmp.resolve("truncated");
        try (Checkpoint hf = Checkpoints.open(HF)) {
            TestCheckpoints.write(truncated, TestCheckpoints.entries(hf, n -> !n.equals("lm_head.weight")), 1L << 30);
        }
        CliRun r = CliRun.of("verify", HF.toString(), truncated.toString());
        assertEquals(3, r.code());
        assertTrue(r.out().contains("missing in B: lm_head.weight"), r.out());
        CliRun reversed = CliRun.of("verify", truncated.toString(), HF.toString());
        assertEquals(3, reversed.code());
        assertTrue(reversed.out().contains("extra in B: lm_head.weight"), reversed.out());
    }

    @Test
    void anMcoreSideNeedsAConfig() {
        CliRun r = CliRun.of("verify", FIXTURE.resolve("mcore_te").toString(), FIXTURE.resolve("mcore_seq").toString());
        assertEquals(1, r.code());
        assertTrue(r.err().contains("give --hf-config"), r.err());
        CliRun withConfig = CliRun.of("verify", FIXTURE.resolve("mcore_te").toString(), FIXTURE.resolve("mcore_seq").toString(), "--hf-config", HF.toString());
        assertEquals(0, withConfig.code(), withConfig.err());
    }

}
