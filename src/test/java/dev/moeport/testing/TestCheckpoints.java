package dev.moeport.testing;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;

import dev.moeport.exec.Executor;
import dev.moeport.exec.Progress;
import dev.moeport.format.Checkpoint;
import dev.moeport.format.Checkpoints;
import dev.moeport.format.safetensors.SafetensorsWriter;
import dev.moeport.plan.Job;
import dev.moeport.plan.OutputTensor;
import dev.moeport.plan.Piece;
import dev.moeport.plan.Plan;
import dev.moeport.quant.QuantKernels;
import dev.moeport.tensor.Shape;
import dev.moeport.tensor.Tensor;
import dev.moeport.util.NaturalOrder;
import java.lang.foreign.Arena;
import java.lang.foreign.ValueLayout;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.TreeSet;

/** Builds test checkpoints from existing tensors, and compares checkpoints byte for byte. */
public final class TestCheckpoints {
    private TestCheckpoints() {}

    /** One output tensor made of the given source tensors, concatenated along dim 0 with {@code shape}. */
    public record Entry(String name, Shape shape, List<Tensor> parts) {
        public static Entry of(String name, Tensor t) {
            return new Entry(name, t.shape(), List.of(t));
        }
    }

    /** A tensor over these bytes. */
    public static dev.moeport.tensor.TensorView bytes(String name, dev.moeport.tensor.DType dtype, Shape shape, byte[] bytes) {
        return new dev.moeport.tensor.TensorView(name, dtype, shape, java.lang.foreign.MemorySegment.ofArray(bytes), null);
    }

    /** An F32 tensor of these values: a 0-d one for a single value, else 1-d. */
    public static dev.moeport.tensor.TensorView f32(String name, float... values) {
        return dev.moeport.tensor.TensorView.ofFloats(name, values);
    }

    /** Writes {@code entries} as a safetensors checkpoint in {@code dir} (created). */
    public static Path write(Path dir, List<Entry> entries, long maxShardBytes) throws Exception {
        Files.createDirectories(dir);
        List<Job> jobs = new ArrayList<>();
        for (Entry e : entries) {
            jobs.add(new Job.Copy(new OutputTensor(e.name(), e.parts().getFirst().dtype(), e.shape()),
                    e.parts().stream().map(t -> (Piece) new Piece.Source(t)).toList(), "copy"));
        }
        Plan plan = Plan.of(jobs, maxShardBytes);
        try (SafetensorsWriter writer = SafetensorsWriter.create(dir, plan.layout(), false);
             Progress progress = new Progress(plan.inputBytes(), plan.outputTensorCount(), null)) {
            new Executor(QuantKernels.scalar(), 2, false).run(plan, writer, progress);
            writer.commit();
        }
        return dir;
    }

    /** Asserts that both checkpoints hold the same tensors: names, dtypes, shapes and every byte. */
    public static void assertSameTensors(Path expected, Path actual) {
        try (Checkpoint a = Checkpoints.open(expected); Checkpoint b = Checkpoints.open(actual)) {
            assertEquals(new TreeSet<>(a.tensors().keySet()), new TreeSet<>(b.tensors().keySet()), "tensor names");
            for (String name : a.tensors().keySet()) {
                assertSameTensor(a.tensor(name), b.tensor(name));
            }
        }
    }

    public static void assertSameTensor(Tensor expected, Tensor actual) {
        if (isRouterBias(expected.name()) && expected.dtype() == dev.moeport.tensor.DType.BF16 && actual.dtype() == dev.moeport.tensor.DType.F32) {
            assertSameWidened(expected, actual);
            return;
        }
        assertEquals(expected.dtype(), actual.dtype(), expected.name() + " dtype");
        assertEquals(expected.shape(), actual.shape(), expected.name() + " shape");
        try (Arena arena = Arena.ofConfined()) {
            assertArrayEquals(expected.bytes(arena).toArray(ValueLayout.JAVA_BYTE), actual.bytes(arena).toArray(ValueLayout.JAVA_BYTE),
                    expected.name() + " bytes");
        }
    }

    /**
     * Megatron keeps the router's expert bias in f32 and moeport keeps it so on import and export; a BF16
     * fixture's bias then comes back as the same values in f32 (each BF16 is exactly an f32 with its low 16 bits zero).
     */
    private static boolean isRouterBias(String name) {
        return name.endsWith("expert_bias") || name.endsWith("e_score_correction_bias");
    }

    private static void assertSameWidened(Tensor bf16, Tensor f32) {
        assertEquals(bf16.shape(), f32.shape(), bf16.name() + " shape");
        try (Arena arena = Arena.ofConfined()) {
            short[] narrow = bf16.bytes(arena).toArray(ValueLayout.JAVA_SHORT_UNALIGNED);
            int[] wide = f32.bytes(arena).toArray(ValueLayout.JAVA_INT_UNALIGNED);
            int[] widened = new int[narrow.length];
            for (int i = 0; i < narrow.length; i++) {
                widened[i] = (narrow[i] & 0xFFFF) << 16;
            }
            assertArrayEquals(widened, wide, bf16.name() + " values");
        }
    }

    /** Every tensor of {@code dir} as an entry, in natural name order, except those {@code keep} rejects. */
    /**
     * A copy of the HF folder {@code hf} (tensors and config.json) in {@code out} where every {@code *_proj} linear has
     * a calibrated input amax ({@code <module>.input_quantizer._amax}, as Model Optimizer stores it) of {@code amax}.
     */
    public static Path withInputAmax(Path hf, Path out, float amax) throws Exception {
        try (Checkpoint ckpt = Checkpoints.open(hf)) {
            List<Entry> all = new ArrayList<>(entries(ckpt, n -> true));
            for (String name : ckpt.tensors().keySet()) {
                if (name.endsWith("_proj.weight")) {
                    String module = name.substring(0, name.length() - ".weight".length());
                    all.add(Entry.of(module + ".input_quantizer._amax", f32("i", amax)));
                }
            }
            write(out, all, 1L << 30);
        }
        Files.copy(hf.resolve("config.json"), out.resolve("config.json"));
        return out;
    }

    public static List<Entry> entries(Checkpoint ckpt, java.util.function.Predicate<String> keep) {
        List<Entry> list = new ArrayList<>();
        ckpt.tensors().keySet().stream().filter(keep).sorted(NaturalOrder.INSTANCE).forEach(n -> list.add(Entry.of(n, ckpt.tensor(n))));
        return list;
    }

}
