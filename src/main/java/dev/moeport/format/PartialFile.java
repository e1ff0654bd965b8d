package dev.moeport.format;

import dev.moeport.format.safetensors.SafetensorsWriter;
import dev.moeport.io.DirectWriter;
import dev.moeport.io.MappedMemory;
import dev.moeport.io.NativeIO;
import dev.moeport.io.WriteBehind;
import dev.moeport.io.WrittenCrc;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.OptionalLong;
import java.util.concurrent.Semaphore;
import java.util.function.Consumer;
import java.util.zip.CRC32C;

/**
 * An output file being written under its hidden partial name ({@link SafetensorsWriter#partialName}), sized and its disk
 * space reserved up front. Writes land at any position, from any thread; each is checksummed for the file's CRC-32C
 * ({@link WrittenCrc}). With write-behind on, they go past the page cache ({@link DirectWriter}), or where the file
 * system refuses that, through it and on to the disk at once ({@link WriteBehind}). {@link #finish} renames it into place, {@link #abandon}
 * removes it. The writers of both checkpoint formats keep their files in these.
 */
public final class PartialFile {
    private final Path partial;
    private final Path target;
    private final long length;
    private final FileChannel channel;
    private final WrittenCrc crc = WrittenCrc.crc32c();
    private final WriteBehind behind;
    /** Where the writes bypass the page cache, or null. */
    private final DirectWriter direct;
    /** Whether large writes go through a mapping: only where the file's disk space is reserved, and while maps succeed. */
    private volatile boolean mapWrites;

    /** Bytes checksummed (and staged, from a mapped input) at a time: they stay in the core's cache between the steps. */
    static final int PIECE = 256 << 10;
    /**
     * Threads writing through mappings of one file at once. Each page first written through a mapping takes a lock of
     * the file's in the kernel (ext4 marks its buffers dirty under it); sixteen threads spun there for most of their
     * time, where four to eight wrote as fast (GPU machine).
     */
    static final int MAPPED_WRITERS = 4;
    private final Semaphore mappedWriters = new Semaphore(MAPPED_WRITERS);
    /**
     * Large writes through {@code write} at once: one in the kernel's lock of the file, one waiting for it (16 threads,
     * GPU machine: an NVFP4 export took 2.05-2.26 s with two, 2.26-2.52 s with one; a BF16 export 1.55-1.68 and
     * 1.65-1.94 s). Those that find both taken go through mappings.
     */
    static final int WRITE_WRITERS = 2;
    private final Semaphore writers = new Semaphore(WRITE_WRITERS);
    /** Writes this large or larger may go through a mapping; smaller ones always go through {@code write}. */
    static final long MAP_AT_LEAST = 1 << 20;
    private static final ThreadLocal<MemorySegment> STAGE = ThreadLocal.withInitial(() -> Arena.ofAuto().allocate(PIECE, 4096));

    /** Creates the partial file of {@code target}, {@code length} bytes long; nothing is left behind when it fails. */
    public PartialFile(Path target, long length, boolean writeBehind) throws IOException {
        this.target = target;
        this.partial = SafetensorsWriter.partialName(target);
        this.length = length;
        boolean reserved;
        this.channel = FileChannel.open(partial, StandardOpenOption.CREATE, StandardOpenOption.TRUNCATE_EXISTING,
                StandardOpenOption.READ, StandardOpenOption.WRITE);
        try {
            reserved = NativeIO.reserve(partial, length);
            // Sizing the file up front makes a tensor of zero bytes at the end still part of it.
            if (channel.size() < length) {
                channel.write(ByteBuffer.allocate(1), length - 1);
            }
        } catch (IOException | RuntimeException e) {
            abandonQuietly();
            throw e;
        }
        // The output goes to the disk as it is written: past the page cache where the file system allows, else handed on.
        this.direct = writeBehind ? DirectWriter.open(partial, length) : null;
        this.behind = writeBehind && direct == null ? WriteBehind.of(partial) : WriteBehind.NONE;
        this.mapWrites = reserved && direct == null;
    }

    public Path target() {
        return target;
    }

    /** Whether large writes go through a mapping (the file's space is reserved). */
    boolean mapsWrites() {
        return mapWrites;
    }

    /** Writes {@code bytes} at {@code position}. */
    public void write(long position, MemorySegment bytes) throws IOException {
        write(position, bytes, piece -> { });
    }

    /**
     * Writes {@code bytes} at {@code position}, in pieces of {@link #PIECE} bytes (with direct writes, the direct
     * writer's steps) that are checksummed on their way and also handed to {@code alsoSees}, in order. Bytes of a mapped
     * input are first copied into memory of this thread's (or the direct writer's) and checksummed there: a checksum
     * read straight from a mapping whose file shrank would crash the JVM (SIGBUS), where a copy fails with an error
     * ({@link InputChanged}).
     *
     * <p>The kernel takes one writer at a time into a file with {@code write}, so sixteen threads filling one shard
     * queued on its lock, and spun there; page faults into a mapping of the file's range run side by side, but cost
     * more per byte. So a large write takes {@code write} where fewer than {@link #WRITE_WRITERS} threads of this file
     * have it, and goes through a mapping otherwise (where the file's space is reserved): an NVFP4 export, which
     * writes a fourth of what it reads, then writes with {@code write} almost always, a BF16 export through both.
     */
    public void write(long position, MemorySegment bytes, Consumer<ByteBuffer> alsoSees) throws IOException {
        long length = bytes.byteSize();
        CRC32C crc = new CRC32C();
        if (direct != null) {
            // The direct writer copies the bytes into memory of its own, mapped or not: the checksum reads that copy.
            try {
                direct.write(position, bytes, step -> {
                    crc.update(step.asByteBuffer());
                    alsoSees.accept(step.asByteBuffer());
                });
            } catch (DirectWriter.SourceFault fault) {
                throw new InputChanged();
            }
            this.crc.record(position, length, (int) crc.getValue());
            return;
        }
        boolean large = mapWrites && length >= MAP_AT_LEAST;
        boolean takesWrite = large && writers.tryAcquire();
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment mapped = large && !takesWrite ? mapped(position, length, arena) : null;
            for (long done = 0; done < length; done += PIECE) {
                MemorySegment piece = bytes.asSlice(done, Math.min(PIECE, length - done));
                if (piece.isMapped()) {
                    piece = staged(piece);
                }
                crc.update(piece.asByteBuffer());
                alsoSees.accept(piece.asByteBuffer());
                if (mapped != null) {
                    putMapped(piece, mapped, done);
                } else {
                    ByteBuffer out = piece.asByteBuffer();
                    while (out.hasRemaining()) {
                        channel.write(out, position + done + out.position());
                    }
                }
            }
        } finally {
            if (takesWrite) {
                writers.release();
            }
        }
        this.crc.record(position, length, (int) crc.getValue());
        behind.written(position, length);
    }

    /** The file's range to write through, or null (and no more mappings) where the file system cannot map it. */
    private MemorySegment mapped(long position, long length, Arena arena) {
        try {
            MemorySegment range = channel.map(FileChannel.MapMode.READ_WRITE, position, length, arena);
            if (behind != WriteBehind.NONE) {
                // Where the output is larger than memory, read-ahead around each fault filled it with pages of zeros
                // the writes had yet to reach, and pushed the input out to be read again (4 GiB, 9.3 GB in: 12.7 GB
                // read, 9.5 without); where it fits, read-ahead makes the faults cheaper.
                NativeIO.advise(range, NativeIO.Advice.RANDOM);
            }
            return range;
        } catch (IOException | UnsupportedOperationException e) {
            mapWrites = false;
            return null;
        }
    }

    /** {@code piece}, copied from its mapping into this thread's staging memory. */
    private static MemorySegment staged(MemorySegment piece) throws InputChanged {
        MemorySegment copy = STAGE.get().asSlice(0, piece.byteSize());
        if (!MappedMemory.copy(piece, 0, copy, 0, piece.byteSize())) {
            throw new InputChanged();
        }
        return copy;
    }

    private void putMapped(MemorySegment piece, MemorySegment mapped, long at) throws IOException {
        mappedWriters.acquireUninterruptibly();
        try {
            if (!MappedMemory.copy(piece, 0, mapped, at, piece.byteSize())) {
                // the kernel could not give the mapping a page: an I/O error, or the disk full despite the reservation
                throw new IOException("the kernel could not write through a mapping of " + partial + " (an I/O error or a full disk)");
            }
        } finally {
            mappedWriters.release();
        }
    }

    /** A mapped input could not be read while its bytes were written: its file shrank or changed. */
    public static final class InputChanged extends IOException {
        InputChanged() {
            super("a mapped input could not be read: its file shrank or changed");
        }
    }

    /** Flushes it (with {@code fsync}), closes it and renames it into place; the CRC-32C of what was written, when known. */
    public OptionalLong finish(boolean fsync) throws IOException {
        if (direct != null) {
            direct.close();
        }
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
        if (direct != null) {
            direct.abandon();
        }
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
