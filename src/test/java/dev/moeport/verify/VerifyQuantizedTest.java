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
    void keepQuantizedKeepsTheCalibrationThroughImportAndExport() throws Exception {
        // fp8 with calibrated inputs for q/k/v and the layer-2 experts' up_proj: the per-tensor and input
        // scales come back through the calibration, and then every code too.
        Path hfCalibrated = tmp.resolve("hf-calibrated");
        try (Checkpoint hf = Checkpoints.open(HF)) {
            java.util.List<dev.moeport.testing.TestCheckpoints.Entry> entries = new java.util.ArrayList<>(
                    dev.moeport.testing.TestCheckpoints.entries(hf, n -> true));
            for (String p : java.util.List.of("q_proj", "k_proj", "v_proj")) {
                entries.add(dev.moeport.testing.TestCheckpoints.Entry.of("backbone.layers.1.mixer." + p + ".input_quantizer._amax",
                        dev.moeport.testing.TestCheckpoints.f32("i", 3.0f)));
            }
            for (int e = 0; e < 8; e++) {
                entries.add(dev.moeport.testing.TestCheckpoints.Entry.of("backbone.layers.2.mixer.experts." + e + ".up_proj.input_quantizer._amax",
                        dev.moeport.testing.TestCheckpoints.f32("i", 2.0f + e)));
            }
            dev.moeport.testing.TestCheckpoints.write(hfCalibrated, entries, 1L << 30);
            java.nio.file.Files.copy(HF.resolve("config.json"), hfCalibrated.resolve("config.json"));
        }
        Path fp8 = CliRun.succeeding("quantize", "--format", "fp8", "--in", hfCalibrated.toString(), "--out", tmp.resolve("fp8").toString());
        try (Checkpoint q = Checkpoints.open(fp8)) {
            assertTrue(q.contains("backbone.layers.2.mixer.experts.5.up_proj.input_scale"));
        }
        for (String layout : java.util.List.of("te", "sequential", "stacked")) {
            Path mcore = CliRun.succeeding("import", "--ckpt-format", "safetensors", "--in", fp8.toString(), "--out", tmp.resolve("m-" + layout).toString(), "--keep-quantized",
                    "--experts", layout);
            Path back = CliRun.succeeding("export", "--in", mcore.toString(), "--hf-config", fp8.toString(), "--out",
                    tmp.resolve("fp8-again-" + layout).toString(), "--format", "fp8");
            assertSameTensors(fp8, back);
        }
        // torch_dist keys the experts' quantizer state under Megatron's doubled experts.experts. as it keys their weights.
        Path torchDist = CliRun.succeeding("import", "--in", fp8.toString(), "--out", tmp.resolve("m-torch-dist").toString(), "--keep-quantized");
        assertSameTensors(fp8, CliRun.succeeding("export", "--in", torchDist.toString(), "--hf-config", fp8.toString(), "--out",
                tmp.resolve("fp8-again-torch-dist").toString(), "--format", "fp8"));
        // nvfp4: the global scales come back exactly (block scales are recomputed from the decoded weights).
        Path calibrated = CliRun.succeeding("export", "--in", FIXTURE.resolve("mcore_te").toString(), "--hf-config", HF.toString(),
                "--out", tmp.resolve("nvfp4").toString(), "--format", "nvfp4");
        Path mcore = CliRun.succeeding("import", "--ckpt-format", "safetensors", "--in", calibrated.toString(), "--out", tmp.resolve("m-nvfp4").toString(), "--keep-quantized");
        Path back = CliRun.succeeding("export", "--in", mcore.toString(), "--hf-config", calibrated.toString(), "--out",
                tmp.resolve("nvfp4-again").toString(), "--format", "nvfp4");
        try (Checkpoint a = Checkpoints.open(calibrated); Checkpoint b = Checkpoints.open(back)) {
            for (String name : a.tensors().keySet()) {
                if (name.endsWith(".weight_scale_2")) {
                    dev.moeport.testing.TestCheckpoints.assertSameTensor(a.tensor(name), b.tensor(name));
                }
            }
        }
        CliRun mx = CliRun.of("import", "--ckpt-format", "safetensors", "--in", CliRun.succeeding("quantize", "--format", "mxfp4", "--in", HF.toString(), "--out",
                tmp.resolve("mx").toString()).toString(), "--out", tmp.resolve("m-mx").toString(), "--keep-quantized");
        assertEquals(1, mx.code());
        assertTrue(mx.err().contains("mxfp4 has no per-tensor calibration to keep"), mx.err());
    }

    @Test
    void importDecodesQuantizedInputAsDequantizeDoes() {
        Path quantized = CliRun.succeeding("quantize", "--format", "nvfp4", "--in", HF.toString(), "--out", tmp.resolve("q").toString());
        Path imported = CliRun.succeeding("import", "--ckpt-format", "safetensors", "--in", quantized.toString(), "--out", tmp.resolve("imported").toString());
        Path dequantized = CliRun.succeeding("dequantize", "--in", quantized.toString(), "--out", tmp.resolve("dq").toString());
        // dequantize drops the quantization config; the config.json beside it drives the import.
        Path importedFromBf16 = CliRun.succeeding("import", "--ckpt-format", "safetensors", "--in", dequantized.toString(), "--out", tmp.resolve("imported-bf16").toString());
        assertSameTensors(importedFromBf16, imported);
        // verify decodes to f32: against the BF16 import only BF16's own rounding (2^-9 relative) remains.
        CliRun r = CliRun.of("verify", quantized.toString(), imported.toString(), "--tolerance", "45");
        assertEquals(0, r.code(), r.out());
    }
}
