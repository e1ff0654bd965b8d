package dev.moeport.format;

import dev.moeport.format.safetensors.SafetensorsWriter;
import dev.moeport.io.NativeIO;
import dev.moeport.io.WriteBehind;
import dev.moeport.io.WrittenCrc;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.OptionalLong;
import java.util.function.Consumer;

/**
 * An output file being written under its hidden partial name ({@link SafetensorsWriter#partialName}), sized and its disk
 * space reserved up front. Writes land at any position, from any thread; each is recorded for the file's CRC-32C
 * ({@link WrittenCrc}) and handed to write-behind when it is on. {@link #finish} renames it into place, {@link #abandon}
 * removes it. The writers of both checkpoint formats keep their files in these.
 */
public final class PartialFile {
    private final Path partial;
    private final Path target;
    private final long length;
    private final FileChannel channel;
    private final WrittenCrc crc = new WrittenCrc();
    private final WriteBehind behind;

    /** Creates the partial file of {@code target}, {@code length} bytes long; nothing is left behind when it fails. */
    public PartialFile(Path target, long length, boolean writeBehind) throws IOException {
        this.target = target;
        this.partial = SafetensorsWriter.partialName(target);
        this.length = length;
        this.channel = FileChannel.open(partial, StandardOpenOption.CREATE, StandardOpenOption.TRUNCATE_EXISTING,
                StandardOpenOption.READ, StandardOpenOption.WRITE);
        try {
            NativeIO.reserve(partial, length);
            // Sizing the file up front makes a tensor of zero bytes at the end still part of it.
            if (channel.size() < length) {
                channel.write(ByteBuffer.allocate(1), length - 1);
            }
        } catch (IOException | RuntimeException e) {
            abandonQuietly();
            throw e;
        }
        this.behind = writeBehind ? WriteBehind.of(partial) : WriteBehind.NONE;
    }

    public Path target() {
        return target;
    }

    /** Writes {@code bytes} (position to limit) at {@code position}. */
    public void write(long position, ByteBuffer bytes) throws IOException {
        crc.record(position, bytes);
        writeOut(position, bytes);
    }

    /**
     * Writes bytes of a mapped input: they are checksummed from the file just written, not from the mapping, whose read
     * would crash the JVM (SIGBUS) if the input shrank, where the write itself reports EFAULT ({@link WrittenCrc#readBack}).
     * {@code alsoSees} is handed the written bytes too, piece by piece.
     */
    public void writeMapped(long position, ByteBuffer bytes, Consumer<ByteBuffer> alsoSees) throws IOException {
        long length = bytes.remaining();
        writeOut(position, bytes);
        WrittenCrc.readBack(channel, position, length, (piece, at) -> {
            alsoSees.accept(piece.duplicate());
            crc.record(at, piece);
        });
    }

    private void writeOut(long position, ByteBuffer bytes) throws IOException {
        long start = position;
        while (bytes.hasRemaining()) {
            position += channel.write(bytes, position);
        }
        behind.written(start, position - start);
    }

    /** Flushes it (with {@code fsync}), closes it and renames it into place; the CRC-32C of what was written, when known. */
    public OptionalLong finish(boolean fsync) throws IOException {
        if (fsync) {
            channel.force(true);
        }
        behind.close();
        channel.close();
        Files.move(partial, target, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
        return crc.of(length);
    }

    /** Closes and deletes it. */
    public void abandon() {
        behind.close();
        abandonQuietly();
    }

    private void abandonQuietly() {
        try {
            channel.close();
            Files.deleteIfExists(partial);
        } catch (IOException ignored) {
            // Best effort: a partial file left behind is hidden and never looks finished.
        }
    }
}
