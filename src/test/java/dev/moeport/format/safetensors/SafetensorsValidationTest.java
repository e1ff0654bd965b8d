package dev.moeport.format.safetensors;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.moeport.MoeportException;
import dev.moeport.testing.RawSafetensors;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.CsvSource;

/** Every malformed file gets its own error, naming the file and, where there is one, the tensor. */
class SafetensorsValidationTest {
    @TempDir
    Path dir;

    private String openError(Path file) {
        MoeportException e = assertThrows(MoeportException.class, () -> SafetensorsCheckpoint.open(file).close());
        assertTrue(e.getMessage().contains(file.getFileName().toString()), "names the file: " + e.getMessage());
        return e.getMessage();
    }

    private Path file(String header, int dataBytes) throws IOException {
        return RawSafetensors.write(dir.resolve("bad.safetensors"), header, dataBytes);
    }

    @Test
    void acceptsAWellFormedFile() throws IOException {
        Path f = file("{\"__metadata__\":{\"format\":\"pt\"},\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]},"
                + "\"a\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[0,4]}}", 12);
        try (SafetensorsCheckpoint c = SafetensorsCheckpoint.open(f)) {
            assertEquals(2, c.tensors().size());
            assertEquals("pt", c.metadata().get("format"));
            assertEquals(4, c.tensor("a").byteSize());
            // data offsets are relative to the data buffer: tensor b starts with byte value 4
            assertEquals(4, ((dev.moeport.tensor.TensorView) c.tensor("b")).data().get(java.lang.foreign.ValueLayout.JAVA_BYTE, 0));
        }
    }

    @Test
    void fileShorterThanTheLengthField() throws IOException {
        Path f = dir.resolve("short.safetensors");
        Files.write(f, new byte[] {1, 2, 3});
        assertTrue(openError(f).contains("too short"));
    }

    @Test
    void headerLengthLargerThanTheFile() throws IOException {
        Path f = RawSafetensors.write(dir.resolve("long.safetensors"), 1000, "{}".getBytes(StandardCharsets.UTF_8), 0);
        assertTrue(openError(f).contains("larger than the file"));
    }

    @Test
    void headerLengthNegativeAsUnsigned() throws IOException {
        Path f = RawSafetensors.write(dir.resolve("neg.safetensors"), -5, "{}".getBytes(StandardCharsets.UTF_8), 0);
        assertTrue(openError(f).contains("larger than the file"));
    }

    @Test
    void headerLengthOverTheLimit() throws IOException {
        // A sparse file larger than the limit, whose header claims 100 MB + 1 byte.
        Path f = dir.resolve("huge.safetensors");
        RawSafetensors.write(f, SafetensorsHeader.MAX_HEADER_BYTES + 1, new byte[0], 0);
        try (var ch = java.nio.channels.FileChannel.open(f, java.nio.file.StandardOpenOption.WRITE)) {
            ch.write(java.nio.ByteBuffer.wrap(new byte[] {' '}), SafetensorsHeader.MAX_HEADER_BYTES + 100);
        }
        assertTrue(openError(f).contains("larger than the limit"));
    }

    @ParameterizedTest
    @CsvSource(delimiter = '|', value = {
        "{not json                       | not valid JSON",
        "[1,2,3]                         | not a JSON object",
        "\"text\"                        | not a JSON object",
        "{\"__metadata__\":[1]}          | __metadata__ is not a map of strings",
        "{\"__metadata__\":{\"a\":1}}    | __metadata__ is not a map of strings",
        "{\"t\":5}                       | tensor 't': entry is not a JSON object",
        "{\"t\":{\"shape\":[1],\"data_offsets\":[0,1]}}                  | tensor 't': missing or non-string \"dtype\"",
        "{\"t\":{\"dtype\":\"Q7\",\"shape\":[1],\"data_offsets\":[0,1]}}  | tensor 't': unknown dtype 'Q7'",
        "{\"t\":{\"dtype\":\"U8\",\"shape\":[-1],\"data_offsets\":[0,1]}} | tensor 't': \"shape\" is not a list of non-negative integers",
        "{\"t\":{\"dtype\":\"U8\",\"shape\":[1.5],\"data_offsets\":[0,1]}}| tensor 't': \"shape\" is not a list of non-negative integers",
        "{\"t\":{\"dtype\":\"U8\",\"shape\":\"1\",\"data_offsets\":[0,1]}} | tensor 't': \"shape\" is not a list",
        "{\"t\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0]}}    | tensor 't': \"data_offsets\" is not a list of 2",
        "{\"t\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[1,0]}}  | end before they begin",
        "{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,4]}} | tensor 't': data_offsets [0, 4] hold 4 bytes but F32[2] needs 8",
        "{\"t\":{\"dtype\":\"F4\",\"shape\":[3],\"data_offsets\":[0,2]}}  | does not end on a byte boundary",
        "{\"t\":{\"dtype\":\"U8\",\"shape\":[99999999999999,99999999999999],\"data_offsets\":[0,4]}} | too many elements",
        "{\"t\":{\"dtype\":\"U8\",\"shape\":[8],\"data_offsets\":[0,8]}}  | lie outside the data buffer of 4 bytes",
        "{\"a\":{\"dtype\":\"U8\",\"shape\":[3],\"data_offsets\":[0,3]},\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[2,4]}} | tensor 'b' overlaps tensor 'a'",
        "{\"a\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},\"b\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[2,4]}} | hole of 1 bytes before tensor 'b'",
        "{\"a\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]}}  | the tensors cover 2 bytes of the 4-byte data buffer",
        "{\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]},\"a\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}} | Duplicate field 'a'",
    })
    void rejectsWithItsOwnMessage(String header, String expected) throws IOException {
        String message = openError(file(header.strip(), 4));
        assertTrue(message.contains(expected), "expected '" + expected + "' in: " + message);
    }

    @Test
    void headerNotUtf8() throws IOException {
        byte[] h = {'{', '"', (byte) 0xC3, (byte) 0x28, '"', ':', '1', '}'};
        Path f = RawSafetensors.write(dir.resolve("latin.safetensors"), h.length, h, 0);
        assertTrue(openError(f).contains("not valid UTF-8"));
    }

    @Test
    void indexNamingAMissingShard() throws IOException {
        RawSafetensors.write(dir.resolve("a.safetensors"), "{\"x\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}", 4);
        Files.writeString(dir.resolve(SafetensorsCheckpoint.INDEX_NAME),
                "{\"weight_map\":{\"x\":\"a.safetensors\",\"y\":\"b.safetensors\"}}");
        MoeportException e = assertThrows(MoeportException.class, () -> SafetensorsCheckpoint.open(dir));
        assertTrue(e.getMessage().contains("names shard 'b.safetensors', which does not exist"), e.getMessage());
    }

    @Test
    void indexNamingATensorTheShardLacks() throws IOException {
        RawSafetensors.write(dir.resolve("a.safetensors"), "{\"x\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}", 4);
        Files.writeString(dir.resolve(SafetensorsCheckpoint.INDEX_NAME),
                "{\"weight_map\":{\"x\":\"a.safetensors\",\"y\":\"a.safetensors\"}}");
        MoeportException e = assertThrows(MoeportException.class, () -> SafetensorsCheckpoint.open(dir));
        assertTrue(e.getMessage().contains("names tensor 'y' in shard a.safetensors, which does not hold it"), e.getMessage());
    }

    @Test
    void sameTensorInTwoShards() throws IOException {
        String x = "{\"x\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}";
        RawSafetensors.write(dir.resolve("a.safetensors"), x, 4);
        RawSafetensors.write(dir.resolve("b.safetensors"), x, 4);
        Files.writeString(dir.resolve(SafetensorsCheckpoint.INDEX_NAME),
                "{\"weight_map\":{\"x\":\"a.safetensors\",\"z\":\"b.safetensors\"}}");
        MoeportException e = assertThrows(MoeportException.class, () -> SafetensorsCheckpoint.open(dir));
        assertTrue(e.getMessage().contains("tensor 'x' is in two shards"), e.getMessage());
        // Without an index the folder's files are merged, with the same check.
        Files.delete(dir.resolve(SafetensorsCheckpoint.INDEX_NAME));
        e = assertThrows(MoeportException.class, () -> SafetensorsCheckpoint.open(dir));
        assertTrue(e.getMessage().contains("tensor 'x' is in two shards"), e.getMessage());
    }

    @Test
    void shardHoldingATensorTheIndexDoesNotList() throws IOException {
        RawSafetensors.write(dir.resolve("a.safetensors"), "{\"x\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[0,2]},"
                + "\"w\":{\"dtype\":\"U8\",\"shape\":[2],\"data_offsets\":[2,4]}}", 4);
        Files.writeString(dir.resolve(SafetensorsCheckpoint.INDEX_NAME), "{\"weight_map\":{\"x\":\"a.safetensors\"}}");
        MoeportException e = assertThrows(MoeportException.class, () -> SafetensorsCheckpoint.open(dir));
        assertTrue(e.getMessage().contains("holds tensor 'w', which the index does not list"), e.getMessage());
    }

    @Test
    void indexEscapingItsFolder() throws IOException {
        Files.writeString(dir.resolve(SafetensorsCheckpoint.INDEX_NAME), "{\"weight_map\":{\"x\":\"../a.safetensors\"}}");
        MoeportException e = assertThrows(MoeportException.class, () -> SafetensorsCheckpoint.open(dir));
        assertTrue(e.getMessage().contains("not a file of the index's folder"), e.getMessage());
    }

    @Test
    void indexNotJson() throws IOException {
        Files.writeString(dir.resolve(SafetensorsCheckpoint.INDEX_NAME), "{\"weight_map\": ");
        MoeportException e = assertThrows(MoeportException.class, () -> SafetensorsCheckpoint.open(dir));
        assertTrue(e.getMessage().contains("not a valid JSON index"), e.getMessage());
    }

    @Test
    void missingPathAndEmptyFolder() throws IOException {
        assertTrue(assertThrows(MoeportException.class, () -> SafetensorsCheckpoint.open(dir.resolve("nope")))
                .getMessage().contains("no such file"));
        Path empty = Files.createDirectory(dir.resolve("empty"));
        assertTrue(assertThrows(MoeportException.class, () -> SafetensorsCheckpoint.open(empty))
                .getMessage().contains("no *.safetensors files"));
    }

    @Test
    void indexLargerThanTheLimit() throws IOException {
        // issue 17 item 6: a 3 GiB sparse index ran out of memory; it is refused before it is read
        try (var f = new java.io.RandomAccessFile(dir.resolve(SafetensorsCheckpoint.INDEX_NAME).toFile(), "rw")) {
            f.setLength(3L << 30);
        }
        assertEquals(dir.resolve(SafetensorsCheckpoint.INDEX_NAME) + ": index of 3221225472 bytes is larger than the limit of 100000000 bytes",
                assertThrows(MoeportException.class, () -> SafetensorsCheckpoint.open(dir)).getMessage());
    }

    @Test
    void aPipeIsRefusedNotWaitedOn() throws Exception {
        // issue 17 item 7: a FIFO as input hung, waiting for a writer
        Path fifo = dir.resolve("model.safetensors");
        assertEquals(0, new ProcessBuilder("mkfifo", fifo.toString()).start().waitFor());
        MoeportException e = org.junit.jupiter.api.Assertions.assertTimeoutPreemptively(java.time.Duration.ofSeconds(30),
                () -> assertThrows(MoeportException.class, () -> dev.moeport.format.Checkpoints.open(fifo).close()));
        assertEquals(fifo + ": not a regular file or folder (a pipe or a device?)", e.getMessage());
    }
}
