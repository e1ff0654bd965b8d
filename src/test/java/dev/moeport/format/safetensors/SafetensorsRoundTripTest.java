package dev.moeport.format.safetensors;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.moeport.tensor.DType;
import dev.moeport.tensor.Shape;
import dev.moeport.tensor.Tensor;
import dev.moeport.tensor.TensorView;
import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

class SafetensorsRoundTripTest {
    @TempDir
    Path dir;

    private static byte[] pattern(String name, long size) {
        byte[] b = new byte[(int) size];
        new Random(name.hashCode()).nextBytes(b);
        return b;
    }

    /** Writes the specs with random bytes in 3 pieces each, from several threads, and commits. */
    private ShardLayout writeAll(List<ShardLayout.Spec> specs, long maxShard) {
        ShardLayout layout = ShardLayout.plan(specs, maxShard);
        try (SafetensorsWriter w = SafetensorsWriter.create(dir, layout, false)) {
            specs.parallelStream().forEach(s -> {
                byte[] bytes = pattern(s.name(), s.byteSize());
                var sink = w.sink(s.name());
                int third = bytes.length / 3;
                // Out of order on purpose: the regions are independent.
                sink.write(third, MemorySegment.ofArray(bytes).asSlice(third, bytes.length - third));
                sink.write(0, MemorySegment.ofArray(bytes).asSlice(0, third));
            });
            w.commit();
        }
        return layout;
    }

    @Test
    void everyDtypeRoundTrips() {
        List<ShardLayout.Spec> specs = new ArrayList<>();
        for (DType t : DType.values()) {
            // 2 x 6 elements: a whole number of bytes for every width, sub-byte ones included.
            specs.add(new ShardLayout.Spec("t_" + t, t, Shape.of(2, 6)));
        }
        specs.add(new ShardLayout.Spec("scalar", DType.F32, Shape.of()));
        specs.add(new ShardLayout.Spec("empty", DType.BF16, Shape.of(0, 4)));
        writeAll(specs, ShardLayout.DEFAULT_MAX_SHARD_BYTES);
        assertTrue(Files.exists(dir.resolve("model.safetensors")));
        assertFalse(Files.exists(dir.resolve(SafetensorsCheckpoint.INDEX_NAME)), "one shard needs no index");
        try (SafetensorsCheckpoint c = SafetensorsCheckpoint.open(dir.resolve("model.safetensors"))) {
            assertEquals(specs.size(), c.tensors().size());
            assertEquals("pt", c.metadata().get("format"));
            for (ShardLayout.Spec s : specs) {
                Tensor t = c.tensor(s.name());
                assertEquals(s.dtype(), t.dtype(), s.name());
                assertEquals(s.shape(), t.shape(), s.name());
                assertArrayEquals(pattern(s.name(), s.byteSize()), ((TensorView) t).data().toArray(ValueLayout.JAVA_BYTE), s.name());
            }
        }
    }

    @Test
    void headerIsCompactAndPaddedToEightBytes() throws IOException {
        writeAll(List.of(new ShardLayout.Spec("a", DType.U8, Shape.of(3))), 1000);
        byte[] file = Files.readAllBytes(dir.resolve("model.safetensors"));
        long n = ByteBuffer.wrap(file).order(ByteOrder.LITTLE_ENDIAN).getLong(0);
        assertEquals(0, n % 8);
        String header = new String(file, 8, (int) n, java.nio.charset.StandardCharsets.UTF_8);
        assertEquals("{\"__metadata__\":{\"format\":\"pt\"},\"a\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[0,3]}}", header.strip());
        assertEquals(8 + n + 3, file.length);
    }

    @Test
    void shardsByMaximumSizeWithAnIndex() throws IOException {
        List<ShardLayout.Spec> specs = new ArrayList<>();
        for (int i = 0; i < 10; i++) {
            specs.add(new ShardLayout.Spec("layer." + i + ".weight", DType.BF16, Shape.of(10, 5))); // 100 bytes each
        }
        specs.add(new ShardLayout.Spec("big", DType.U8, Shape.of(1000))); // larger than a shard: a shard of its own
        ShardLayout layout = writeAll(specs, 250);
        assertEquals(List.of(2, 2, 2, 2, 2, 1), layout.shards().stream().map(s -> s.entries().size()).toList());
        try (Stream<Path> files = Files.list(dir)) {
            assertEquals(List.of("model-00001-of-00006.safetensors", "model-00002-of-00006.safetensors", "model-00003-of-00006.safetensors",
                    "model-00004-of-00006.safetensors", "model-00005-of-00006.safetensors", "model-00006-of-00006.safetensors",
                    SafetensorsCheckpoint.INDEX_NAME), files.map(p -> p.getFileName().toString()).sorted().toList());
        }
        JsonNode index = new ObjectMapper().readTree(dir.resolve(SafetensorsCheckpoint.INDEX_NAME).toFile());
        assertEquals(2000, index.at("/metadata/total_size").asLong());
        assertEquals("model-00006-of-00006.safetensors", index.at("/weight_map/big").asText());
        assertEquals("model-00003-of-00006.safetensors", index.at("/weight_map/layer.5.weight").asText());
        try (SafetensorsCheckpoint c = SafetensorsCheckpoint.open(dir)) {
            assertEquals(11, c.tensors().size());
            for (ShardLayout.Spec s : specs) {
                assertArrayEquals(pattern(s.name(), s.byteSize()), ((TensorView) c.tensor(s.name())).data().toArray(ValueLayout.JAVA_BYTE));
            }
        }
    }

    @Test
    void closingWithoutCommitLeavesNothing() throws IOException {
        ShardLayout layout = ShardLayout.plan(List.of(new ShardLayout.Spec("a", DType.U8, Shape.of(100)),
                new ShardLayout.Spec("b", DType.U8, Shape.of(100))), 100);
        try (SafetensorsWriter w = SafetensorsWriter.create(dir, layout, false)) {
            w.sink("a").write(0, MemorySegment.ofArray(new byte[100]));
            try (Stream<Path> files = Files.list(dir)) {
                assertTrue(files.allMatch(SafetensorsWriter::isPartial), "only hidden partial files while writing");
            }
        }
        try (Stream<Path> files = Files.list(dir)) {
            assertEquals(0, files.count());
        }
    }

    @Test
    void commitRefusesAnIncompleteTensor() {
        ShardLayout layout = ShardLayout.plan(List.of(new ShardLayout.Spec("a", DType.U8, Shape.of(100))), 1000);
        try (SafetensorsWriter w = SafetensorsWriter.create(dir, layout, false)) {
            w.sink("a").write(0, MemorySegment.ofArray(new byte[60]));
            assertThrows(IllegalStateException.class, w::commit);
            assertFalse(Files.exists(dir.resolve("model.safetensors")));
            assertThrows(IllegalStateException.class, () -> w.sink("a").write(50, MemorySegment.ofArray(new byte[60])));
        }
    }

    @Test
    void readsTensorsBeyondTwoGigabytes() throws IOException {
        // A sparse 3 GB file: a mapping larger than a ByteBuffer can address.
        long big = 3L << 30;
        Path f = dir.resolve("big.safetensors");
        String header = "{\"small\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]},"
                + "\"big\":{\"dtype\":\"BF16\",\"shape\":[" + (big / 2) + "],\"data_offsets\":[8," + (8 + big) + "]}}";
        byte[] h = header.getBytes(java.nio.charset.StandardCharsets.UTF_8);
        try (FileChannel ch = FileChannel.open(f, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE)) {
            ByteBuffer head = ByteBuffer.allocate(8 + h.length).order(ByteOrder.LITTLE_ENDIAN).putLong(h.length).put(h).flip();
            ch.write(head);
            ch.write(ByteBuffer.wrap(new byte[] {42}), 8 + h.length + 8 + big - 1);
        }
        try (SafetensorsCheckpoint c = SafetensorsCheckpoint.open(f)) {
            TensorView t = (TensorView) c.tensor("big");
            assertEquals(big, t.byteSize());
            assertEquals(42, t.data().get(ValueLayout.JAVA_BYTE, big - 1));
            TensorView tail = t.narrow(big / 2 - 1, 1, "tail");
            assertEquals(42, tail.data().get(ValueLayout.JAVA_BYTE, 1));
        }
    }

    @Test
    void readsTheTransformersFixture() {
        try (SafetensorsCheckpoint c = SafetensorsCheckpoint.open(dev.moeport.testing.Shared.fixture("nemotron_h_tiny/hf"))) {
            assertEquals(71, c.tensors().size());
            assertEquals(4, c.files().size());
            assertEquals(Shape.of(1096, 256), c.tensor("backbone.layers.0.mixer.in_proj.weight").shape());
        }
    }

    @Test
    void viewsLiveInTheCheckpointsArena() throws IOException {
        writeAll(List.of(new ShardLayout.Spec("a", DType.U8, Shape.of(4))), 100);
        MemorySegment data;
        try (SafetensorsCheckpoint c = SafetensorsCheckpoint.open(dir)) {
            data = ((TensorView) c.tensor("a")).data();
            assertTrue(data.isMapped());
        }
        assertThrows(IllegalStateException.class, () -> data.get(ValueLayout.JAVA_BYTE, 0));
    }
}
