package dev.moeport.format.torchdist;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.moeport.MoeportException;
import dev.moeport.format.Checkpoint;
import dev.moeport.format.Checkpoints;
import dev.moeport.tensor.Tensor;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/** Damaged checkpoints: each fails with moeport's own one-line error naming the file, never a crash. */
class TorchDistValidationTest {
    @TempDir
    Path dir;

    /** Opens the checkpoint and reads every tensor: the error of whichever step fails. */
    private static String error(Path checkpoint) {
        MoeportException e = assertThrows(MoeportException.class, () -> {
            try (Checkpoint c = Checkpoints.open(checkpoint); Arena arena = Arena.ofConfined()) {
                for (Tensor t : c.tensors().values()) {
                    t.bytes(arena);
                }
            }
        });
        assertEquals(1, e.getMessage().lines().count(), e.getMessage());
        return e.getMessage();
    }

    @ParameterizedTest
    @CsvSource({
        "overlapping,      chunks at [0, 0] and [0, 1] overlap",
        "missing_chunk,    its chunks cover 6 of its 24 elements (chunks missing)",
        "missing_file,     names data file '__7_0.distcp'",
        "outside_folder,   which is not a file of the checkpoint folder",
        "beyond_file,      lies beyond the end of the file",
        "wrong_dtype,      holds F32[6, 3] but the metadata says F16[6, 3]",
    })
    void damagedMetadata(String variant, String message) throws IOException {
        Path copy = TorchDistFixtures.copy("dtypes", dir);
        Files.copy(TorchDistFixtures.root().resolve("bad_metadata").resolve(variant + ".metadata"),
                copy.resolve(TorchDistCheckpoint.METADATA), StandardCopyOption.REPLACE_EXISTING);
        String error = error(copy);
        assertTrue(error.contains(message), error);
        assertTrue(error.contains(copy.toString()), "names the file: " + error);
    }

    @Test
    void truncatedDataFile() throws IOException {
        Path copy = TorchDistFixtures.copy("experts_tp", dir);
        Path file = copy.resolve("__2_0.distcp");
        try (FileChannel channel = FileChannel.open(file, StandardOpenOption.WRITE)) {
            channel.truncate(channel.size() - 100);
        }
        String error = error(copy);
        assertTrue(error.startsWith(file + ": chunk '"), error);
        assertTrue(error.contains("lies beyond the end of the file"), error);
    }

    @Test
    void corruptChunkZip() throws IOException {
        Path copy = TorchDistFixtures.copy("strided", dir);
        Path file = copy.resolve("__1_0.distcp");
        byte[] bytes = Files.readAllBytes(file);
        // the end-of-central-directory signature of the file's last chunk: "PK\5\6" -> "PK\5\7"
        for (int i = bytes.length - 22; i >= 0; i--) {
            if (bytes[i] == 'P' && bytes[i + 1] == 'K' && bytes[i + 2] == 5 && bytes[i + 3] == 6) {
                bytes[i + 3] = 7;
                break;
            }
        }
        Files.write(file, bytes);
        String error = error(copy);
        assertTrue(error.startsWith(file + " (chunk at [4, 0] of 'sharded_transposed'"), error);
        assertTrue(error.endsWith("no zip end record (truncated or not a torch.save zip)"), error);
    }

    @Test
    void missingMetadata() throws IOException {
        Path copy = TorchDistFixtures.copy("dtypes", dir);
        Files.delete(copy.resolve(TorchDistCheckpoint.METADATA));
        assertEquals(copy + ": no .metadata file in this folder (not a torch_dist checkpoint, or incomplete)", error(copy));
    }

    @Test
    void otherShardedBackend() throws IOException {
        Path copy = TorchDistFixtures.copy("dtypes", dir);
        Files.writeString(copy.resolve("metadata.json"), "{\"sharded_backend\": \"zarr\"}");
        assertTrue(error(copy).endsWith("metadata.json: sharded_backend 'zarr' is not supported (moeport reads torch_dist)"));
    }

    @Test
    void megatronTrackerFileNamesTheIteration() throws IOException {
        Files.writeString(dir.resolve("latest_checkpointed_iteration.txt"), "12\n");
        assertEquals(dir.resolve("latest_checkpointed_iteration.txt") + ": names iteration folder 'iter_0000012', which does not exist"
                + " (an interrupted save, or a copy without it?)", error(dir));
        Files.createDirectory(dir.resolve("iter_0000012"));
        assertTrue(error(dir).startsWith(dir.resolve("iter_0000012") + ": no .metadata file"));
        Files.writeString(dir.resolve("latest_checkpointed_iteration.txt"), "twelve");
        assertTrue(error(dir).endsWith("expected an iteration number or 'release', found 'twelve'"));
    }

    @Test
    void forbiddenGlobalInTheMetadata() throws IOException {
        Path copy = TorchDistFixtures.copy("dtypes", dir);
        // protocol 2: GLOBAL 'os system', ('echo pwned',), REDUCE, STOP
        Files.write(copy.resolve(TorchDistCheckpoint.METADATA),
                PickleBytes.of(0x80, 2, "cos\nsystem\n", 'X', 10, 0, 0, 0, "echo pwned", 0x85, 'R', '.'));
        assertEquals(copy.resolve(TorchDistCheckpoint.METADATA)
                + ": pickle refuses global 'os.system' (only the classes of a PyTorch checkpoint are allowed), at byte 2", error(copy));
    }

    /**
     * The fixture's metadata with the first tensor's dtype ({@code torch.bfloat16}: SHORT_BINUNICODE
     * 'torch', MEMOIZE 16, SHORT_BINUNICODE 'bfloat16', MEMOIZE 17, STACK_GLOBAL at bytes 182 to 201, as
     * pickletools.dis shows) replaced by the tuple ('torch', hostile), keeping memo 16 and 17 in place.
     */
    private Path withHostileDtype(int attack, Object... hostile) throws IOException {
        Path copy = TorchDistFixtures.copy("dtypes", Files.createDirectory(dir.resolve("attack" + attack)));
        Path file = copy.resolve(TorchDistCheckpoint.METADATA);
        byte[] metadata = Files.readAllBytes(file);
        assertEquals("bfloat16", new String(metadata, 192, 8, java.nio.charset.StandardCharsets.US_ASCII));
        java.io.ByteArrayOutputStream b = new java.io.ByteArrayOutputStream();
        b.write(metadata, 0, 182);
        b.writeBytes(PickleBytes.of('(', 0x8c, 5, "torch", 0x94));
        b.writeBytes(PickleBytes.of(hostile));
        b.writeBytes(PickleBytes.of('t'));
        b.write(metadata, 202, metadata.length - 202);
        byte[] spliced = b.toByteArray();
        // the first FRAME (opcode at byte 2, 8-byte little-endian length) grows or shrinks with the splice
        java.nio.ByteBuffer frame = java.nio.ByteBuffer.wrap(spliced, 3, 8).order(java.nio.ByteOrder.LITTLE_ENDIAN);
        frame.putLong(3, frame.getLong(3) + spliced.length - metadata.length);
        Files.write(file, spliced);
        return copy;
    }

    private static Object[] repeat(int times, Object... parts) {
        Object[] out = new Object[times * parts.length];
        for (int i = 0; i < out.length; i++) {
            out[i] = parts[i % parts.length];
        }
        return out;
    }

    private static Object[] concat(Object[]... parts) {
        return java.util.Arrays.stream(parts).flatMap(java.util.Arrays::stream).toArray();
    }

    @Test
    void hostileDtypesGiveAShortError() throws IOException {
        // issue 17 item 3: each of these as a tensor's dtype once overflowed the stack, ran out of memory or printed megabytes
        Object[][] attacks = {
            concat(new Object[] {'N'}, repeat(3000, 0x85), new Object[] {0x94}), // a 3,000-deep tuple (memo 17)
            {']', 0x94, 'h', 17, 'a'}, // a list that holds itself
            concat(new Object[] {']', 0x94, '('}, repeat(1_000_000, 'K', 1), new Object[] {'e'}), // 10^6 integers
            concat(new Object[] {']', 0x94}, repeat(40, 'h', 17, 0x86, 'q', 17)), // billion laughs: 2^40 values
        };
        for (int i = 0; i < attacks.length; i++) {
            Path copy = withHostileDtype(i, attacks[i]);
            String error = error(copy);
            assertEquals(copy.resolve(TorchDistCheckpoint.METADATA) + ": tensor 'dtype.bf16': element type a tuple is not supported", error);
        }
    }

    /** The first chunk zip of the dtypes fixture's {@code __0_0.distcp}, as Python's zipfile lists it (offsets from the zip's start). */
    private static final int DATA_CENTRAL_HEADER = 1282; // central directory entry of 'archive/data/0'
    private static final int DATA_LOCAL_HEADER = 598;
    private static final int VERSION_LOCAL_HEADER = 750; // the entry 'archive/version'

    private Path damagedFirstZip(java.util.function.Consumer<java.nio.ByteBuffer> damage) throws IOException {
        Path copy = TorchDistFixtures.copy("dtypes", dir);
        Path file = copy.resolve("__0_0.distcp");
        java.nio.ByteBuffer bytes = java.nio.ByteBuffer.wrap(Files.readAllBytes(file)).order(java.nio.ByteOrder.LITTLE_ENDIAN);
        assertEquals(0x02014b50, bytes.getInt(DATA_CENTRAL_HEADER));
        assertEquals(DATA_LOCAL_HEADER, bytes.getInt(DATA_CENTRAL_HEADER + 42));
        damage.accept(bytes);
        Files.write(file, bytes.array());
        return file;
    }

    @Test
    void directoryPointingAtAnotherEntry() throws IOException {
        // issue 17 item 5: this exported with exit 0 and garbage
        Path file = damagedFirstZip(b -> b.putInt(DATA_CENTRAL_HEADER + 42, VERSION_LOCAL_HEADER));
        String error = error(file.getParent());
        assertTrue(error.startsWith(file + " (chunk at "), error);
        assertTrue(error.endsWith(": the local header at byte 750 does not name entry 'archive/data/0' (the directory points elsewhere)"), error);
    }

    @Test
    void flippedDataByte() throws IOException {
        // the tensor's first byte: after the local header, its name and its extra field (alignment padding)
        Path file = damagedFirstZip(b -> {
            int data = DATA_LOCAL_HEADER + 30 + (b.getShort(DATA_LOCAL_HEADER + 26) & 0xffff) + (b.getShort(DATA_LOCAL_HEADER + 28) & 0xffff);
            b.put(data, (byte) (b.get(data) ^ 0x10));
        });
        String error = error(file.getParent());
        assertTrue(error.startsWith(file + " (chunk at "), error);
        assertTrue(error.matches(".*: entry 'archive/data/0' has CRC-32 [0-9a-f]{8}, not the [0-9a-f]{8} its zip records \\(the file is damaged\\)"), error);
    }
}
