package dev.moeport.verify;

import static dev.moeport.testing.TestCheckpoints.assertSameTensors;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.moeport.cli.CliRun;
import dev.moeport.format.Checkpoint;
import dev.moeport.format.Checkpoints;
import dev.moeport.tensor.FloatFormats;
import dev.moeport.testing.Shared;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** verify and import on quantized checkpoints: decoded first, figures within what the format allows. */
class VerifyQuantizedTest {
    private static final Path FIXTURE = Shared.fixture("nemotron_h_tiny");
    private static final Path HF = FIXTURE.resolve("hf");

    @TempDir
    Path tmp;

    /**
     * A lower bound on the SNR of NVFP4 for this BF16 tensor. Per block of 16, the effective scale S is
     * e4m3(amax_b / (6 s2)) * s2 with s2 = amax / 2688; e4m3 rounds within a factor 1 +- 1/16 (plus
     * 2^-10 absolute below its normal range), so S lies within amax_b/6 * (1 +- 1/16) + 2^-10 s2. An
     * element within 6 S is off by at most half the largest E2M1 gap (1 between 4 and 6), i.e. S; a
     * saturated one by at most amax_b - 6 S. Hence |err| <= 17/96 amax_b + 6 * 2^-10 s2 per element.
     */
    private static double nvfp4SnrBound(MemorySegment bf16, long rows, long cols) {
        float amax = 0;
        for (long i = 0; i < rows * cols; i++) {
            amax = Math.max(amax, Math.abs(value(bf16, i)));
        }
        double s2 = amax / 2688.0;
        double signal = 0;
        double noise = 0;
        for (long r = 0; r < rows; r++) {
            for (long b = 0; b < cols / 16; b++) {
                double blockAmax = 0;
                for (long i = 0; i < 16; i++) {
                    double v = value(bf16, r * cols + b * 16 + i);
                    blockAmax = Math.max(blockAmax, Math.abs(v));
                    signal += v * v;
                }
                double err = 17.0 / 96.0 * blockAmax + 6 * 0x1p-10 * s2;
                noise += 16 * err * err;
            }
        }
        return 10 * Math.log10(signal / noise);
    }

    private static float value(MemorySegment bf16, long i) {
        return Float.intBitsToFloat(bf16.getAtIndex(FloatFormats.SHORT_LE, i) << 16);
    }

    @Test
    void nvfp4ExportAgainstTheBf16OriginalStaysWithinTheFormatsBound() throws Exception {
        Path exported = CliRun.succeeding("export", "--in", FIXTURE.resolve("mcore_te").toString(), "--hf-config", HF.toString(),
                "--out", tmp.resolve("nvfp4").toString(), "--format", "nvfp4");
        CliRun r = CliRun.of("verify", HF.toString(), exported.toString(), "--json");
        assertEquals(3, r.code(), "lossy: the checkpoints differ");
        JsonNode report = new ObjectMapper().readTree(r.out());
        assertEquals(0, report.get("missing_in_b").size() + report.get("extra_in_b").size());
        Map<String, JsonNode> byName = new HashMap<>();
        report.get("tensors").forEach(t -> byName.put(t.get("name").asText(), t));
        int checked = 0;
        try (Checkpoint hf = Checkpoints.open(HF); Checkpoint q = Checkpoints.open(exported); Arena arena = Arena.ofConfined()) {
            for (String name : hf.tensors().keySet()) {
                JsonNode figures = byName.get(name);
                if (!name.endsWith(".weight") || !q.contains(name.replace(".weight", ".weight_scale_2"))) {
                    assertTrue(figures.get("identical").asBoolean(), name + " is not quantized and must be identical");
                    continue;
                }
                var t = hf.tensor(name);
                double bound = nvfp4SnrBound(t.bytes(arena), t.shape().dim(0), t.shape().dim(1));
                double snr = figures.get("snr_db").asDouble();
                assertFalse(figures.get("identical").asBoolean(), name);
                assertTrue(snr >= bound, name + ": SNR " + snr + " dB below the format's bound " + bound + " dB");
                checked++;
            }
        }
        // Mamba in/out_proj x2, q/k/v/o, MLP up/down, and 2 x (8 experts x 2 + 2 shared): all but embeddings, lm_head, routers, conv1d.
        assertEquals(4 + 4 + 2 + 36, checked);
        CliRun tolerant = CliRun.of("verify", HF.toString(), exported.toString(), "--tolerance", "10");
        assertEquals(0, tolerant.code(), tolerant.out());
    }

    @Test
    void importDecodesQuantizedInputAsDequantizeDoes() {
        Path quantized = CliRun.succeeding("quantize", "--format", "nvfp4", "--in", HF.toString(), "--out", tmp.resolve("q").toString());
        Path imported = CliRun.succeeding("import", "--in", quantized.toString(), "--out", tmp.resolve("imported").toString());
        Path dequantized = CliRun.succeeding("dequantize", "--in", quantized.toString(), "--out", tmp.resolve("dq").toString());
        // dequantize drops the quantization config; the config.json beside it drives the import.
        Path importedFromBf16 = CliRun.succeeding("import", "--in", dequantized.toString(), "--out", tmp.resolve("imported-bf16").toString());
        assertSameTensors(importedFromBf16, imported);
        // verify decodes to f32: against the BF16 import only BF16's own rounding (2^-9 relative) remains.
        CliRun r = CliRun.of("verify", quantized.toString(), imported.toString(), "--tolerance", "45");
        assertEquals(0, r.code(), r.out());
    }
}
