package dev.moeport.format.torchdist;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.io.InputStream;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.List;
import java.util.SequencedMap;
import java.util.zip.CRC32;
import java.util.zip.ZipEntry;
import java.util.zip.ZipFile;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A chunk zip whose tensor data passes 4 GiB needs zip64 sizes (the data entry) and zip64 offsets (the
 * entries after it). The zip is written sparse (only the bytes around the data), and read back by the JDK's
 * own zip reader, an implementation independent of moeport's, and by moeport's reader.
 */
class TorchSaveZipTest {
    private static final long DATA_BYTES = (4L << 30) + 192; // past 0xFFFFFFFF, a whole number of bf16 values

    @Test
    void chunkLargerThanFourGibIsAZip64ThatOtherReadersOpen(@TempDir Path dir) throws IOException {
        byte[] pickle = PickleWriter.pickle(List.of("stand-in for data.pkl"));
        TorchSaveZip zip = TorchSaveZip.tensor(pickle, DATA_BYTES);
        int crc = zeroCrc(DATA_BYTES); // the sparse file's data reads as zeros
        Path file = dir.resolve("big.pt");
        try (FileChannel ch = FileChannel.open(file, StandardOpenOption.CREATE_NEW, StandardOpenOption.WRITE, StandardOpenOption.SPARSE)) {
            ch.write(ByteBuffer.wrap(zip.prefix(crc)), 0);
            ch.write(ByteBuffer.wrap(zip.suffix(crc)), zip.dataOffset() + DATA_BYTES);
            assertEquals(zip.length(), ch.size());
        }
        assertEquals(0, zip.dataOffset() % 64, "torch.save aligns tensor data to 64 bytes");

        try (ZipFile jdk = new ZipFile(file.toFile())) {
            assertEquals(List.of("archive/data.pkl", "archive/.format_version", "archive/.storage_alignment", "archive/byteorder",
                    "archive/data/0", "archive/version", "archive/.data/serialization_id"),
                    jdk.stream().map(ZipEntry::getName).toList());
            ZipEntry data = jdk.getEntry("archive/data/0");
            assertEquals(DATA_BYTES, data.getSize());
            assertEquals(DATA_BYTES, data.getCompressedSize());
            assertEquals(ZipEntry.STORED, data.getMethod());
            assertEquals(Integer.toUnsignedLong(crc), data.getCrc());
            // Past the 4 GiB data: found only through the zip64 offset of its directory entry.
            assertEquals("3\n", read(jdk, "archive/version"));
            assertEquals(40, read(jdk, "archive/.data/serialization_id").length());
        }

        try (Arena arena = Arena.ofConfined(); FileChannel ch = FileChannel.open(file, StandardOpenOption.READ)) {
            MemorySegment mapped = ch.map(FileChannel.MapMode.READ_ONLY, 0, ch.size(), arena);
            SequencedMap<String, MemorySegment> entries = ChunkZip.entries(mapped, file.toString());
            MemorySegment data = entries.get("archive/data/0");
            assertEquals(DATA_BYTES, data.byteSize());
            assertEquals(zip.dataOffset(), data.address() - mapped.address());
            assertTrue(entries.get("archive/version").address() - mapped.address() > 0xFFFFFFFFL);
        }
    }

    private static String read(ZipFile zip, String name) throws IOException {
        try (InputStream in = zip.getInputStream(zip.getEntry(name))) {
            return new String(in.readAllBytes(), StandardCharsets.US_ASCII);
        }
    }

    private static int zeroCrc(long bytes) {
        CRC32 crc = new CRC32();
        ByteBuffer zeros = ByteBuffer.allocateDirect(1 << 24);
        for (long left = bytes; left > 0; left -= zeros.capacity()) {
            crc.update(zeros.clear().limit((int) Math.min(left, zeros.capacity())));
        }
        return (int) crc.getValue();
    }
}
