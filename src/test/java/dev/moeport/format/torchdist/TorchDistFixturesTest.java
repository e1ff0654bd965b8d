package dev.moeport.format.torchdist;

import static dev.moeport.format.torchdist.TorchDistFixtures.assertSameTensor;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.moeport.format.Checkpoint;
import dev.moeport.format.Checkpoints;
import dev.moeport.format.safetensors.SafetensorsCheckpoint;
import dev.moeport.tensor.DType;
import dev.moeport.tensor.Shape;
import dev.moeport.tensor.Tensor;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.util.List;
import java.util.TreeSet;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.ValueSource;

/** Every tensor of every fixture, byte for byte against what PyTorch was asked to save. */
class TorchDistFixturesTest {

    @ParameterizedTest
    @ValueSource(strings = {"experts_tp", "layer_stacked", "dtypes", "strided"})
    void everyTensorEqualsWhatPyTorchSaved(String name) {
        try (Checkpoint ckpt = Checkpoints.open(TorchDistFixtures.fixture(name));
                SafetensorsCheckpoint expected = TorchDistFixtures.expected(name);
                Arena arena = Arena.ofConfined()) {
            assertEquals("torch_dist", ckpt.format());
            assertEquals(new TreeSet<>(expected.tensors().keySet()), new TreeSet<>(ckpt.tensors().keySet()));
            for (Tensor want : expected.tensors().values()) {
                assertSameTensor(want, ckpt.tensor(want.name()), arena);
            }
            assertEquals(TorchDistFixtures.expectedSkipped(expected), new TreeSet<>(ckpt.skipped().keySet()));
        }
    }

    /**
     * scripts/fixtures/make_torch_dist.py, experts_tp: fc1 [4, 16, 12] is saved as 4 chunks an expert (its gate and up
     * halves, each split over 2 tensor-parallel ranks), fc2 [4, 12, 8] as 2 an expert (columns split), the router
     * replicated whole. A view spanning several chunks is put together from them, and says so to the plan.
     */
    @Test
    void aViewSpanningSeveralChunksSaysItIsGathered() {
        try (Checkpoint ckpt = Checkpoints.open(TorchDistFixtures.fixture("experts_tp"))) {
            Tensor fc1 = ckpt.tensor("decoder.layers.3.mlp.experts.linear_fc1.weight");
            assertEquals("gather 16 chunks", fc1.transform());
            assertEquals("gather 4 chunks", fc1.select(1, "e1").transform());
            assertEquals("gather 2 chunks", fc1.select(1, "e1").narrow(8, 8, "up").transform());
            assertEquals("gather 2 chunks", ckpt.tensor("decoder.layers.3.mlp.experts.linear_fc2.weight").select(0, "e0").transform());
            assertEquals(null, ckpt.tensor("decoder.layers.3.mlp.router.weight").transform());
        }
    }

    @Test
    void narrowAndSelectGiveTheSameBytesAsTheExpectedSlices() {
        try (Checkpoint ckpt = Checkpoints.open(TorchDistFixtures.fixture("experts_tp"));
                SafetensorsCheckpoint expected = TorchDistFixtures.expected("experts_tp");
                Arena arena = Arena.ofConfined()) {
            for (String name : List.of("decoder.layers.3.mlp.experts.linear_fc1.weight", "decoder.layers.3.mlp.experts.linear_fc2.weight")) {
                Tensor stacked = ckpt.tensor(name);
                Tensor want = expected.tensor(name);
                for (long e = 0; e < stacked.shape().dim(0); e++) {
                    assertSameTensor(want.select(e, "x"), stacked.select(e, "x"), arena);
                    for (long start = 0; start < want.shape().dim(1); start += 3) {
                        long count = Math.min(5, want.shape().dim(1) - start);
                        assertSameTensor(want.select(e, "x").narrow(start, count, "y"), stacked.select(e, "x").narrow(start, count, "y"), arena);
                    }
                }
                assertSameTensor(want.narrow(1, 2, "z"), stacked.narrow(1, 2, "z"), arena);
            }
        }
    }

    @Test
    void oneChunkGivesAZeroCopySliceOfTheMappedFile() {
        try (Checkpoint ckpt = Checkpoints.open(TorchDistFixtures.fixture("layer_stacked"));
                Arena arena = Arena.ofConfined()) {
            // layer 1 of the stacked qkv: two tensor-parallel chunks of 6 rows each
            Tensor qkv = ckpt.tensor("decoder.layers.1.self_attention.linear_qkv.weight");
            assertEquals(Shape.of(12, 8), qkv.shape());
            assertTrue(qkv.narrow(0, 6, "rank0").bytes(arena).isMapped(), "rows of one chunk are a slice of the file");
            assertTrue(qkv.narrow(7, 4, "rank1").bytes(arena).isMapped());
            assertFalse(qkv.narrow(3, 6, "both").bytes(arena).isMapped(), "rows of two chunks are copied");
            assertFalse(qkv.bytes(arena).isMapped());
        }
    }

    @Test
    void aTransposedChunkIsGatheredRowMajor() {
        try (Checkpoint ckpt = Checkpoints.open(TorchDistFixtures.fixture("strided"));
                SafetensorsCheckpoint expected = TorchDistFixtures.expected("strided");
                Arena arena = Arena.ofConfined()) {
            Tensor transposed = ckpt.tensor("transposed");
            assertEquals(Shape.of(3, 5), transposed.shape());
            assertFalse(transposed.bytes(arena).isMapped(), "a non-contiguous view is gathered into scratch memory");
            assertSameTensor(expected.tensor("transposed").narrow(1, 2, "rows"), transposed.narrow(1, 2, "rows"), arena);
            assertSameTensor(expected.tensor("sharded_transposed").select(5, "row"), ckpt.tensor("sharded_transposed").select(5, "row"), arena);
        }
    }

    @Test
    void viewsWithAStorageOffsetReadFromTheRightPlace() throws IOException {
        try (SafetensorsCheckpoint expected = TorchDistFixtures.expected("torch_save");
                Arena arena = Arena.ofConfined()) {
            for (Tensor want : expected.tensors().values()) {
                Path file = TorchDistFixtures.fixture("torch_save").resolve(want.name() + ".pt");
                StoredTensor stored;
                try (FileChannel channel = FileChannel.open(file)) {
                    stored = TorchSave.read(channel.map(FileChannel.MapMode.READ_ONLY, 0, channel.size(), arena), file.toString());
                }
                assertTrue(stored.storageOffset() > 0, want.name());
                assertEquals(want.dtype(), stored.dtype());
                assertEquals(want.shape(), Shape.of(stored.shape()));
                MemorySegment got = arena.allocate(want.byteSize());
                long[] shape = stored.shape();
                stored.copyBox(new long[shape.length], shape, got, 0, rowMajorStrides(shape));
                assertEquals(-1, want.bytes(arena).mismatch(got), want.name());
            }
        }
    }

    @Test
    void dtypesIncludeFloat8RebuiltByV3() {
        try (Checkpoint ckpt = Checkpoints.open(TorchDistFixtures.fixture("dtypes"))) {
            assertEquals(DType.F8_E4M3, ckpt.tensor("dtype.f8_e4m3").dtype());
            assertEquals(DType.F8_E8M0, ckpt.tensor("dtype.f8_e8m0").dtype());
            assertEquals(DType.U16, ckpt.tensor("dtype.u16").dtype());
            assertEquals(Shape.of(), ckpt.tensor("scalar.f32").shape());
        }
    }

    @Test
    void opensTheMetadataFileItself() {
        try (Checkpoint c = Checkpoints.open(TorchDistFixtures.fixture("dtypes").resolve(TorchDistCheckpoint.METADATA))) {
            assertEquals("torch_dist", c.format());
            assertTrue(c.contains("split.f32"));
        }
    }

    private static long[] rowMajorStrides(long[] shape) {
        long[] strides = new long[shape.length];
        long stride = 1;
        for (int d = shape.length - 1; d >= 0; d--) {
            strides[d] = stride;
            stride *= shape[d];
        }
        return strides;
    }
}
