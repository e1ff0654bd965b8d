package dev.moeport.exec;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.moeport.MoeportException;
import dev.moeport.format.Checkpoint;
import dev.moeport.format.Checkpoints;
import dev.moeport.plan.Piece;
import dev.moeport.tensor.DType;
import dev.moeport.tensor.Shape;
import dev.moeport.testing.TestCheckpoints;
import java.io.ByteArrayOutputStream;
import java.lang.foreign.ValueLayout;
import java.nio.channels.FileChannel;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Tensors of safetensors files are read by position, chunk by chunk, and a file cut short under a run is a clean error. */
class PositionedReadTest {
    @TempDir
    Path tmp;

    private static final int ROWS = 4096;
    private static final int ROW_BYTES = 4096; // 16 MB: two 8 MB chunks

    private byte[] random() {
        byte[] b = new byte[ROWS * ROW_BYTES];
        new Random(7).nextBytes(b);
        return b;
    }

    private Path checkpoint(byte[] bytes) throws Exception {
        return TestCheckpoints.write(tmp.resolve("ckpt"), List.of(TestCheckpoints.Entry.of("w",
                TestCheckpoints.bytes("w", DType.U8, Shape.of(ROWS, ROW_BYTES), bytes))), Long.MAX_VALUE);
    }

    @Test
    void chunksReadByPositionHoldTheFilesBytes() throws Exception {
        byte[] expected = random();
        Path dir = checkpoint(expected);
        ByteArrayOutputStream read = new ByteArrayOutputStream();
        try (Checkpoint c = Checkpoints.open(dir); Scratch scratch = new Scratch()) {
            PieceReader.forEachChunk(new Piece.Source(c.tensor("w")), scratch, (bytes, first, rows) -> {
                assertTrue(!bytes.isMapped(), "read into scratch memory, not through the mapping");
                read.writeBytes(bytes.toArray(ValueLayout.JAVA_BYTE));
            });
        }
        assertArrayEquals(expected, read.toByteArray());
    }

    @Test
    void aFileCutShortUnderARunIsACleanErrorNamingIt() throws Exception {
        Path dir = checkpoint(random());
        Path file = dir.resolve("model.safetensors");
        try (Checkpoint c = Checkpoints.open(dir); Scratch scratch = new Scratch()) {
            // A trainer rewriting the checkpoint, or a network file system losing it: the file shrinks after it was opened.
            try (FileChannel ch = FileChannel.open(file, StandardOpenOption.WRITE)) {
                ch.truncate(ch.size() / 3);
            }
            MoeportException e = assertThrows(MoeportException.class,
                    () -> PieceReader.forEachChunk(new Piece.Source(c.tensor("w")), scratch, (bytes, first, rows) -> { }));
            assertTrue(e.getMessage().startsWith(file.toString()) && e.getMessage().contains("ends inside tensor 'w'"), e.getMessage());
        }
    }
}
