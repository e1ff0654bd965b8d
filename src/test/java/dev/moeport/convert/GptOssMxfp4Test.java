package dev.moeport.convert;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.moeport.cli.CliRun;
import dev.moeport.format.Checkpoint;
import dev.moeport.format.Checkpoints;
import dev.moeport.tensor.DType;
import dev.moeport.tensor.FloatFormats;
import dev.moeport.tensor.Shape;
import dev.moeport.tensor.Tensor;
import dev.moeport.testing.Shared;
import dev.moeport.testing.TestCheckpoints;
import dev.moeport.testing.TestCheckpoints.Entry;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * {@code --flavor transformers} mxfp4: GPT-OSS's published experts as transformers' mxfp4 method reads them
 * (transformers 5.17, integrations/mxfp4.py: {@code Mxfp4GptOssExperts} holds {@code gate_up_proj}
 * {@code [E, 2 * intermediate, hidden / 32, 16]} and {@code down_proj} {@code [E, hidden, intermediate / 32, 16]} uint8;
 * {@code convert_moe_packed_tensors} decodes a block's low nibble first, times {@code 2^(scale - 127)}, and transposes
 * each expert back to {@code [in, out]}).
 */
class GptOssMxfp4Test {
    @TempDir
    Path tmp;

    /**
     * Model Optimizer's own MXFP4 outputs ({@code ../shared/golden/quant/mxfp4__*}), each golden matrix {@code w [out, in]}
     * made an expert {@code [in, out]} of a fused tensor: the blocks are Model Optimizer's weight bytes, the scales its
     * weight_scale bytes, and dequantize gives its {@code dequant}, transposed.
     */
    @Test
    void expertsAreModelOptimizersBytesInGptOssShapes() throws Exception {
        Map<Shape, List<Path>> byShape = new LinkedHashMap<>();
        try (var files = Files.list(Shared.golden("quant"))) {
            for (Path f : files.filter(p -> p.getFileName().toString().startsWith("mxfp4__")).sorted().toList()) {
                try (Checkpoint g = Checkpoints.open(f)) {
                    byShape.computeIfAbsent(g.tensor("w").shape(), s -> new ArrayList<>()).add(f);
                }
            }
        }
        assertEquals(7, byShape.size(), "golden shapes");
        ObjectMapper json = new ObjectMapper();
        ObjectNode config = (ObjectNode) json.readTree(Shared.fixture("gpt_oss/hf").resolve("config.json").toFile());
        config.put("num_hidden_layers", byShape.size());
        Path in = tmp.resolve("in");
        List<Entry> entries = new ArrayList<>();
        List<String> names = new ArrayList<>();
        try (Arena arena = Arena.ofConfined()) {
            int layer = 0;
            for (var group : byShape.entrySet()) {
                long out = group.getKey().dim(0);
                long inDim = group.getKey().dim(1);
                List<Path> cases = group.getValue();
                byte[] fused = new byte[(int) (cases.size() * out * inDim * 2)];
                for (int e = 0; e < cases.size(); e++) {
                    try (Checkpoint g = Checkpoints.open(cases.get(e))) {
                        MemorySegment w = g.tensor("w").bytes(arena);
                        for (long o = 0; o < out; o++) {
                            for (long i = 0; i < inDim; i++) {
                                MemorySegment.ofArray(fused).set(FloatFormats.SHORT_LE, ((e * inDim + i) * out + o) * 2,
                                        w.getAtIndex(FloatFormats.SHORT_LE, o * inDim + i));
                            }
                        }
                    }
                }
                String name = "model.layers." + layer++ + ".mlp.experts.down_proj";
                names.add(name);
                entries.add(Entry.of(name, TestCheckpoints.bytes(name, DType.BF16, Shape.of(cases.size(), inDim, out), fused)));
            }
        }
        TestCheckpoints.write(in, entries, 1L << 30);
        json.writeValue(in.resolve("config.json").toFile(), config);

        Path q = CliRun.succeeding("quantize", "--format", "mxfp4", "--flavor", "transformers", "--in", in.toString(), "--out", tmp.resolve("q").toString());
        Path d = CliRun.succeeding("dequantize", "--in", q.toString(), "--out", tmp.resolve("d").toString());
        assertEquals("mxfp4", json.readTree(q.resolve("config.json").toFile()).at("/quantization_config/quant_method").asText());
        try (Checkpoint qc = Checkpoints.open(q); Checkpoint dc = Checkpoints.open(d); Arena arena = Arena.ofConfined()) {
            int layer = 0;
            for (var group : byShape.entrySet()) {
                String name = names.get(layer++);
                long out = group.getKey().dim(0);
                long inDim = group.getKey().dim(1);
                int experts = group.getValue().size();
                Tensor blocks = qc.tensor(name + "_blocks");
                Tensor scales = qc.tensor(name + "_scales");
                assertEquals(Shape.of(experts, out, inDim / 32, 16), blocks.shape(), name);
                assertEquals(Shape.of(experts, out, inDim / 32), scales.shape(), name);
                assertEquals(DType.U8, blocks.dtype());
                assertEquals(DType.U8, scales.dtype());
                MemorySegment b = blocks.bytes(arena);
                MemorySegment s = scales.bytes(arena);
                MemorySegment decoded = dc.tensor(name).bytes(arena);
                for (int e = 0; e < experts; e++) {
                    try (Checkpoint g = Checkpoints.open(group.getValue().get(e))) {
                        String what = name + " expert " + e + " (" + group.getValue().get(e).getFileName() + ")";
                        long wBytes = out * inDim / 2;
                        long sBytes = out * inDim / 32;
                        assertEquals(-1, b.asSlice(e * wBytes, wBytes).mismatch(g.tensor("weight").bytes(arena)), what);
                        assertEquals(-1, s.asSlice(e * sBytes, sBytes).mismatch(g.tensor("weight_scale").bytes(arena)), what);
                        MemorySegment dequant = g.tensor("dequant").bytes(arena);
                        for (long o = 0; o < out; o++) {
                            for (long i = 0; i < inDim; i++) {
                                short expected = dequant.getAtIndex(FloatFormats.SHORT_LE, o * inDim + i);
                                short got = decoded.getAtIndex(FloatFormats.SHORT_LE, (e * inDim + i) * out + o);
                                if (expected != got) {
                                    throw new AssertionError(what + " [" + o + ", " + i + "]: " + got + " != " + expected);
                                }
                            }
                        }
                    }
                }
            }
        }
        CliRun check = CliRun.of("check", q.toString());
        assertEquals(0, check.code(), check.out() + check.err());
    }
}
