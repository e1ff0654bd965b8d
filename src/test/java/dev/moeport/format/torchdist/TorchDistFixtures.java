package dev.moeport.format.torchdist;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.ObjectMapper;
import dev.moeport.format.safetensors.SafetensorsCheckpoint;
import dev.moeport.tensor.Tensor;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Set;
import java.util.TreeSet;
import java.util.stream.Stream;

/**
 * The torch_dist fixtures that scripts/fixtures/make_torch_dist.py wrote with PyTorch, and the
 * tensors it meant them to hold ({@code expected/<fixture>.safetensors}, under the names moeport
 * presents; its metadata "skipped" lists the entries moeport must skip).
 */
final class TorchDistFixtures {
    private TorchDistFixtures() {}

    static Path root() {
        Path root = Path.of("fixtures/torch_dist").toAbsolutePath();
        assertTrue(Files.isDirectory(root), "fixtures of torch_dist checkpoints not found at " + root);
        return root;
    }

    static Path fixture(String name) {
        return root().resolve(name);
    }

    static SafetensorsCheckpoint expected(String name) {
        return SafetensorsCheckpoint.open(root().resolve("expected").resolve(name + ".safetensors"));
    }

    static Set<String> expectedSkipped(SafetensorsCheckpoint expected) {
        try {
            List<?> names = new ObjectMapper().readValue(expected.metadata().get("skipped"), List.class);
            return new TreeSet<>(names.stream().map(String.class::cast).toList());
        } catch (IOException e) {
            throw new UncheckedIOException(e);
        }
    }

    /** Same dtype, shape and bytes. */
    static void assertSameTensor(Tensor expected, Tensor actual, Arena arena) {
        assertEquals(expected.dtype(), actual.dtype(), actual.name());
        assertEquals(expected.shape(), actual.shape(), actual.name());
        MemorySegment want = expected.bytes(arena);
        MemorySegment got = actual.bytes(arena);
        assertEquals(-1, want.mismatch(got), () -> actual.name() + ": bytes differ at " + want.mismatch(got));
    }

    /** A copy of a fixture folder, to damage. */
    static Path copy(String name, Path into) throws IOException {
        Path from = fixture(name);
        Path to = into.resolve(name);
        Files.createDirectories(to);
        try (Stream<Path> files = Files.list(from)) {
            for (Path f : files.toList()) {
                Files.copy(f, to.resolve(f.getFileName()));
            }
        }
        return to;
    }
}
