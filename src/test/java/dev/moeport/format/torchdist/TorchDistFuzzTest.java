package dev.moeport.format.torchdist;

import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import dev.moeport.MoeportException;
import dev.moeport.format.Checkpoint;
import dev.moeport.format.torchdist.TorchDistMetadata.ChunkKey;
import dev.moeport.format.torchdist.TorchDistMetadata.StorageInfo;
import dev.moeport.tensor.Tensor;
import dev.moeport.testing.Bytes;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.HexFormat;
import java.util.List;
import java.util.Random;
import java.util.function.Consumer;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * Thousands of mutations (fixed seeds) of the pickles and zips that PyTorch wrote: each must give a
 * valid result or moeport's own error; any other exception, a stack overflow or a hang fails.
 */
// A separate thread: a parser stuck in a loop never sees an interrupt, so only this fails the test.
@Timeout(value = 120, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class TorchDistFuzzTest {
    /** Opcodes and values worth splicing into a pickle. */
    private static final byte[][] PICKLE_TOKENS = {
        {'('}, {')'}, {']'}, {'}'}, {'t'}, {'a'}, {'e'}, {'s'}, {'u'}, {'R'}, {(byte) 0x81}, {'b'}, {'.'}, {'N'}, {'Q'},
        {(byte) 0x94}, {'h', 0}, {'h', (byte) 0xff}, {'q', 3}, {'r', -1, -1, -1, -1}, {'j', 1, 0, 0, 0}, {(byte) 0x93},
        {'K', 7}, {'J', -1, -1, -1, -1}, {(byte) 0x8a, 8, -1, -1, -1, -1, -1, -1, -1, 127}, {'X', -1, -1, -1, 127},
        {(byte) 0x8c, 5, 't', 'o', 'r', 'c', 'h'}, {(byte) 0x8c, 4, 'S', 'i', 'z', 'e'}, {(byte) 0x85}, {(byte) 0x86}, {(byte) 0x87},
    };

    @TempDir
    Path dir;

    private int accepted;

    @Test
    void mutatedMetadataPicklesDecodeOrFailCleanly() throws IOException {
        byte[] seed = Files.readAllBytes(TorchDistFixtures.fixture("experts_tp").resolve(TorchDistCheckpoint.METADATA));
        Random random = new Random(20261126);
        for (int i = 0; i < 4000; i++) {
            byte[] input = mutate(seed, random, PICKLE_TOKENS);
            check(input, bytes -> TorchDistMetadata.parse(MemorySegment.ofArray(bytes), "fuzz.metadata"));
        }
        assertTrue(accepted > 100, "the fuzzer should also produce valid pickles, got " + accepted);
    }

    @Test
    void checkpointsWithMutatedMetadataOpenAndReadOrFailCleanly() throws IOException {
        Path copy = TorchDistFixtures.copy("experts_tp", dir);
        Path metadata = copy.resolve(TorchDistCheckpoint.METADATA);
        byte[] seed = Files.readAllBytes(metadata);
        Random random = new Random(7);
        for (int i = 0; i < 1500; i++) {
            byte[] input = mutate(seed, random, PICKLE_TOKENS);
            Files.write(metadata, input);
            check(input, bytes -> readEverything(copy));
        }
        assertTrue(accepted > 50, "the fuzzer should also produce valid checkpoints, got " + accepted);
    }

    @Test
    void mutatedChunkZipsGiveTheirTensorOrFailCleanly() throws IOException {
        // a float8 tensor: UntypedStorage and _rebuild_tensor_v3
        byte[] seed = chunkZip("dtypes", "dtype.f8_e4m3", List.of(0L, 0L));
        Random random = new Random(42);
        for (int i = 0; i < 6000; i++) {
            byte[] input = mutateZip(seed, random);
            check(input, bytes -> {
                StoredTensor t = TorchSave.read(MemorySegment.ofArray(bytes), "fuzz.zip");
                try (Arena arena = Arena.ofConfined()) {
                    long[] lo = new long[t.shape().length];
                    long[] strides = new long[lo.length];
                    long numel = 1;
                    for (int d = lo.length - 1; d >= 0; d--) {
                        strides[d] = numel;
                        numel *= t.shape()[d];
                    }
                    t.copyBox(lo, t.shape(), arena.allocate(numel * t.dtype().byteWidth()), 0, strides);
                }
            });
        }
        assertTrue(accepted > 100, "the fuzzer should also produce valid zips, got " + accepted);
    }

    private static void readEverything(Path checkpoint) {
        try (Checkpoint c = TorchDistCheckpoint.open(checkpoint); Arena arena = Arena.ofConfined()) {
            for (Tensor t : c.tensors().values()) {
                t.bytes(arena);
                if (t.rank() > 0 && t.shape().dim(0) > 0) {
                    t.select(t.shape().dim(0) - 1, "last").bytes(arena);
                }
            }
        }
    }

    private void check(byte[] input, Consumer<byte[]> run) {
        try {
            run.accept(input);
            accepted++;
        } catch (MoeportException expected) {
            // the project's own error: fine
        } catch (RuntimeException | StackOverflowError | OutOfMemoryError e) {
            fail("unexpected " + e + " for input " + HexFormat.of().formatHex(input), e);
        }
    }

    /** The bytes of one chunk's torch.save zip, found through the fixture's metadata. */
    private static byte[] chunkZip(String fixture, String key, List<Long> offsets) throws IOException {
        Path folder = TorchDistFixtures.fixture(fixture);
        byte[] metadata = Files.readAllBytes(folder.resolve(TorchDistCheckpoint.METADATA));
        StorageInfo info = TorchDistMetadata.parse(MemorySegment.ofArray(metadata), fixture).storage().get(new ChunkKey(key, offsets));
        byte[] file = Files.readAllBytes(folder.resolve(info.relativePath()));
        return Arrays.copyOfRange(file, (int) info.offset(), (int) (info.offset() + info.length()));
    }

    private static byte[] mutate(byte[] seed, Random random, byte[][] tokens) {
        byte[] b = seed.clone();
        int edits = 1 + random.nextInt(3);
        for (int e = 0; e < edits; e++) {
            int at = b.length == 0 ? 0 : random.nextInt(b.length);
            switch (random.nextInt(6)) {
                case 0 -> { if (b.length > 0) b[at] = (byte) random.nextInt(256); }
                case 1 -> { if (b.length > 0) b[at] ^= (byte) (1 << random.nextInt(8)); }
                case 2 -> b = Bytes.splice(b, at, random.nextInt(Math.min(8, b.length - at) + 1), new byte[0]);
                case 3 -> b = Bytes.splice(b, at, 0, tokens[random.nextInt(tokens.length)]);
                case 4 -> { if (b.length > 0) b[at] = (byte) (b[at] + random.nextInt(5) - 2); } // nudge a length or count
                default -> b = Arrays.copyOf(b, at);
            }
        }
        return b;
    }

    /** Zip mutations aimed at its structure: the directory and end records at the tail, the headers, and 32-bit fields. */
    private static byte[] mutateZip(byte[] seed, Random random) {
        byte[] b = seed.clone();
        int edits = 1 + random.nextInt(3);
        for (int e = 0; e < edits; e++) {
            int tail = Math.max(0, b.length - 600);
            int at = b.length == 0 ? 0 : random.nextBoolean() ? tail + random.nextInt(b.length - tail) : random.nextInt(b.length);
            switch (random.nextInt(6)) {
                case 0 -> { if (b.length > 0) b[at] = (byte) random.nextInt(256); }
                case 1 -> { if (b.length > 0) b[at] ^= (byte) (1 << random.nextInt(8)); }
                case 2 -> { // a 32-bit field set to a boundary value
                    int[] values = {0, -1, 0x7fffffff, b.length, b.length + 1, random.nextInt(b.length + 1)};
                    int v = values[random.nextInt(values.length)];
                    for (int k = 0; k < 4 && at + k < b.length; k++) {
                        b[at + k] = (byte) (v >>> (8 * k));
                    }
                }
                case 3 -> b = Bytes.splice(b, at, random.nextInt(Math.min(16, b.length - at) + 1), new byte[0]);
                case 4 -> b = Bytes.splice(b, at, 0, new byte[1 + random.nextInt(8)]);
                default -> b = Arrays.copyOf(b, at);
            }
        }
        return b;
    }
}
