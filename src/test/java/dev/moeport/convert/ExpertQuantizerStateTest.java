package dev.moeport.convert;

import static org.junit.jupiter.api.Assertions.assertEquals;

import dev.moeport.cli.CliRun;
import dev.moeport.format.Checkpoint;
import dev.moeport.format.Checkpoints;
import dev.moeport.tensor.FloatFormats;
import dev.moeport.testing.Shared;
import dev.moeport.testing.TestCheckpoints;
import dev.moeport.testing.TestCheckpoints.Entry;
import java.lang.foreign.Arena;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A TEGroupedMLP's weight calibration in both layouts Model Optimizer writes into a Megatron state dict:
 * since PR 1550 one weight quantizer per expert, {@code experts.linear_fc1.weight_quantizer.<e>._amax}
 * (modelopt/torch/quantization/plugins/transformer_engine.py:151-154, the GroupedQuantizer surfaced as
 * {@code weight_quantizer.{i}}; plugins/megatron.py:777-779 keeps each expert's amax in its own shape);
 * before, one per grouped linear, {@code experts.linear_fc1.weight_quantizer._amax}
 * (plugins/megatron.py:420-426, a scalar amax viewed as one value).
 */
class ExpertQuantizerStateTest {
    private static final Path QWEN = Shared.fixture("qwen3_moe/hf");
    private static final String FC1 = "decoder.layers.1.mlp.experts.linear_fc1";
    private static final float NVFP4_SCALE2 = 6.0f * 448.0f;
    private static final int EXPERTS = 8;

    @TempDir
    Path tmp;

    /** The fixture in Megatron-Core's TEGroupedMLP names, plus the given quantizer state. */
    private Path megatronWith(String name, List<Entry> quantizerState) throws Exception {
        Path mcore = CliRun.succeeding("import", "--ckpt-format", "safetensors", "--in", QWEN.toString(), "--out", tmp.resolve(name + "-src").toString());
        try (Checkpoint m = Checkpoints.open(mcore)) {
            List<Entry> entries = new java.util.ArrayList<>(TestCheckpoints.entries(m, n -> true));
            entries.addAll(quantizerState);
            return TestCheckpoints.write(tmp.resolve(name), entries, 1L << 30);
        }
    }

    private float[] exportedScale2(Path mcore) {
        Path out = CliRun.succeeding("export", "--in", mcore.toString(), "--hf-config", QWEN.toString(), "--out", tmp.resolve(mcore.getFileName() + "-hf").toString(),
                "--format", "nvfp4");
        float[] scales = new float[EXPERTS];
        try (Checkpoint hf = Checkpoints.open(out); Arena arena = Arena.ofConfined()) {
            for (int e = 0; e < EXPERTS; e++) {
                float gate = hf.tensor("model.layers.1.mlp.experts." + e + ".gate_proj.weight_scale_2").bytes(arena).get(FloatFormats.FLOAT_LE, 0);
                float up = hf.tensor("model.layers.1.mlp.experts." + e + ".up_proj.weight_scale_2").bytes(arena).get(FloatFormats.FLOAT_LE, 0);
                assertEquals(gate, up, "gate and up of expert " + e + " share fc1's scale");
                scales[e] = gate;
            }
        }
        return scales;
    }

    @Test
    void oneWeightQuantizerPerExpert() throws Exception {
        List<Entry> state = new java.util.ArrayList<>();
        float[] expected = new float[EXPERTS];
        for (int e = 0; e < EXPERTS; e++) {
            float amax = 0.5f + e;
            state.add(Entry.of(FC1 + ".weight_quantizer." + e + "._amax", TestCheckpoints.f32(FC1 + ".weight_quantizer." + e + "._amax", amax)));
            expected[e] = amax / NVFP4_SCALE2;
        }
        assertEquals(java.util.Arrays.toString(expected), java.util.Arrays.toString(exportedScale2(megatronWith("per-expert", state))));
    }

    @Test
    void oneWeightQuantizerPerGroupedLinear() throws Exception {
        String name = FC1 + ".weight_quantizer._amax";
        float[] expected = new float[EXPERTS];
        java.util.Arrays.fill(expected, 3.25f / NVFP4_SCALE2);
        assertEquals(java.util.Arrays.toString(expected),
                java.util.Arrays.toString(exportedScale2(megatronWith("grouped", List.of(Entry.of(name, TestCheckpoints.f32(name, 3.25f)))))));
    }
}
