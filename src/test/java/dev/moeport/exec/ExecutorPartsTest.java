package dev.moeport.exec;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.moeport.format.Checkpoint;
import dev.moeport.format.Checkpoints;
import dev.moeport.format.safetensors.SafetensorsWriter;
import dev.moeport.format.torchdist.TorchDistWriter;
import dev.moeport.plan.Job;
import dev.moeport.plan.OutputTensor;
import dev.moeport.plan.Piece;
import dev.moeport.plan.Plan;
import dev.moeport.quant.QuantKernels;
import dev.moeport.tensor.DType;
import dev.moeport.tensor.Shape;
import dev.moeport.tensor.TensorView;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.file.Path;
import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Copies and casts larger than a part run in parts, on several threads, and write what a run of whole jobs writes. */
class ExecutorPartsTest {
    private static final long PART_BYTES = 4096;
    private final Random random = new Random(7);

    @TempDir
    Path dir;

    /** A BF16 matrix of random finite values. */
    private TensorView bf16(String name, int rows, int cols) {
        ByteBuffer bytes = ByteBuffer.allocate(rows * cols * 2).order(ByteOrder.LITTLE_ENDIAN);
        for (int i = 0; i < rows * cols; i++) {
            bytes.putShort((short) (Float.floatToRawIntBits(random.nextFloat() * 8 - 4) >>> 16));
        }
        return new TensorView(name, DType.BF16, Shape.of(rows, cols), MemorySegment.ofArray(bytes.array()), null);
    }

    private static byte[] bytesOf(TensorView t) {
        return t.data().toArray(ValueLayout.JAVA_BYTE);
    }

    @Test
    void copiesAndCastsInPartsWriteEveryByteInItsPlace() {
        TensorView a = bf16("a", 300, 64);
        TensorView b = bf16("b", 201, 64);
        TensorView c = bf16("c", 150, 32);
        TensorView d = bf16("d", 4, 64);
        Job.Copy stack = new Job.Copy(new OutputTensor("stack", DType.BF16, Shape.of(511, 64)),
                List.of(new Piece.Source(a), new Piece.Zeros(10, 128), new Piece.Source(b)), "copy");
        Job.Cast wide = new Job.Cast(new OutputTensor("wide", DType.F32, Shape.of(150, 32)), List.of(new Piece.Source(c)), DType.BF16, "cast");
        Job.Copy small = new Job.Copy(new OutputTensor("small", DType.BF16, Shape.of(4, 64)), List.of(new Piece.Source(d)), "copy");
        Plan plan = Plan.of(List.of(stack, wide, small), Long.MAX_VALUE);
        assertTrue(Executor.Stretch.parts(Executor.Stretch.of(stack.pieces()), PART_BYTES).size() > 10, "the stack runs in parts");
        assertTrue(Executor.Stretch.parts(Executor.Stretch.of(wide.pieces()), PART_BYTES).size() > 1, "the cast runs in parts");

        Progress.Snapshot done;
        try (SafetensorsWriter writer = SafetensorsWriter.create(dir, plan.layout(), false);
             Progress progress = new Progress(plan.inputBytes(), plan.outputTensorCount(), null)) {
            new Executor(QuantKernels.scalar(), 3, false, PART_BYTES).run(plan, writer, progress);
            writer.commit();
            done = progress.snapshot();
        }
        assertEquals(3, done.tensors(), "each tensor counted once, by its last part");
        assertEquals(plan.inputBytes(), done.done());

        ByteBuffer expectedStack = ByteBuffer.allocate(511 * 128).put(bytesOf(a)).put(new byte[10 * 128]).put(bytesOf(b));
        ByteBuffer cBits = ByteBuffer.wrap(bytesOf(c)).order(ByteOrder.LITTLE_ENDIAN);
        ByteBuffer expectedWide = ByteBuffer.allocate(150 * 32 * 4).order(ByteOrder.LITTLE_ENDIAN);
        while (cBits.hasRemaining()) {
            expectedWide.putInt((cBits.getShort() & 0xFFFF) << 16); // a BF16 is the high half of the same f32
        }
        try (Checkpoint out = Checkpoints.open(dir); Arena arena = Arena.ofConfined()) {
            assertArrayEquals(expectedStack.array(), out.tensor("stack").bytes(arena).toArray(ValueLayout.JAVA_BYTE));
            assertArrayEquals(expectedWide.array(), out.tensor("wide").bytes(arena).toArray(ValueLayout.JAVA_BYTE));
            assertArrayEquals(bytesOf(d), out.tensor("small").bytes(arena).toArray(ValueLayout.JAVA_BYTE));
        }
    }

    /**
     * Megatron's checkpoints record each chunk's CRC-32 in its zip entry, which the writer puts together from writes in
     * any order; moeport's reader checks it. The stack is saved as two chunks, as Megatron saves a gated MLP's fc1
     * ([gate; up]), so that parts write across a chunk's end.
     */
    @Test
    void partsIntoTorchDistGiveEachChunkItsCrc() {
        TensorView a = bf16("a", 300, 64);
        TensorView b = bf16("b", 202, 64);
        Job.Copy stack = new Job.Copy(new OutputTensor("decoder.stack.weight", DType.BF16, Shape.of(512, 64)),
                List.of(new Piece.Source(a), new Piece.Zeros(10, 128), new Piece.Source(b)), "copy");
        Plan plan = Plan.of(List.of(stack), Long.MAX_VALUE);
        Path out = dir.resolve("torch_dist");
        try (TorchDistWriter writer = torchDist(out, plan, java.util.Set.of("decoder.stack.weight"));
             Progress progress = new Progress(plan.inputBytes(), plan.outputTensorCount(), null)) {
            writer.writeIndexFiles();
            new Executor(QuantKernels.scalar(), 3, false, PART_BYTES).run(plan, writer, progress);
            writer.commit();
        }
        ByteBuffer expected = ByteBuffer.allocate(512 * 128).put(bytesOf(a)).put(new byte[10 * 128]).put(bytesOf(b));
        try (Checkpoint read = Checkpoints.open(out); Arena arena = Arena.ofConfined()) {
            assertArrayEquals(expected.array(), read.tensor("decoder.stack.weight").bytes(arena).toArray(ValueLayout.JAVA_BYTE));
        }
    }

    /** A torch_dist output whose tensor was written but in part does not commit, and names the tensor and its bytes. */
    @Test
    void aTorchDistTensorWrittenInPartDoesNotCommit() {
        Plan plan = Plan.of(List.of(new Job.Copy(new OutputTensor("decoder.w.weight", DType.BF16, Shape.of(512, 64)),
                List.of(new Piece.Source(bf16("w", 512, 64))), "copy")), Long.MAX_VALUE);
        try (TorchDistWriter writer = torchDist(dir.resolve("torch_dist"), plan, java.util.Set.of())) {
            writer.writeIndexFiles();
            writer.sink("decoder.w.weight").write(1024, MemorySegment.ofArray(new byte[4096]));
            IllegalStateException e = assertThrows(IllegalStateException.class, writer::commit);
            assertTrue(e.getMessage().contains("decoder.w.weight (4096 of 65536 bytes)"), e.getMessage());
        }
    }

    /** A torch_dist writer of {@code plan}'s one file into {@code out}, per-layer keys, {@code gatedFc1} saved as two chunks. */
    private static TorchDistWriter torchDist(Path out, Plan plan, java.util.Set<String> gatedFc1) {
        TorchDistWriter.Naming naming = new TorchDistWriter.Naming(false, 0, gatedFc1, java.util.Map.of(),
                java.util.function.UnaryOperator.identity(), java.util.Map.of());
        return TorchDistWriter.create(out, out, plan.layout(), naming, shard -> true, false, false, (file, crc) -> { });
    }

    @Test
    void partsCoverTheJobsBytesOnceInOrderAndStayWithinTheirSize() {
        List<Piece> pieces = List.of(new Piece.Source(bf16("a", 300, 64)), new Piece.Zeros(10, 128), new Piece.Source(bf16("b", 3, 64)),
                new Piece.Source(bf16("c", 201, 64)));
        List<List<Executor.Stretch>> parts = Executor.Stretch.parts(Executor.Stretch.of(pieces), PART_BYTES);
        long at = 0;
        for (List<Executor.Stretch> part : parts) {
            long bytes = 0;
            for (Executor.Stretch s : part) {
                assertEquals(at, s.at(), "each stretch begins where the one before it ended");
                at += s.piece().byteSize();
                bytes += s.piece().byteSize();
            }
            assertTrue(bytes <= PART_BYTES, "a part of " + bytes + " bytes");
        }
        assertEquals((300 + 10 + 3 + 201) * 128, at);
    }
}
