package dev.moeport.format.safetensors;

import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.moeport.MoeportException;
import dev.moeport.format.PartialFile;
import dev.moeport.format.TensorOutput;
import dev.moeport.io.IoErrors;
import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicLong;

/**
 * Writes a {@link ShardLayout} as safetensors shards, streaming: headers are laid out up front, then
 * producers fill each tensor's byte range with positioned writes, from any number of threads, in any
 * order, never holding a shard in memory.
 *
 * <p>Crash safety: shards are written as hidden {@code .NAME.partial} files, each renamed into place as soon
 * as its last byte is written (and reported, for a manifest that lets a killed run resume). {@link #commit()}
 * checks that every byte of every tensor was written and writes the index last (through a temporary file
 * too). A run that dies before the commit leaves its unfinished shards as hidden partial files, and
 * {@link #close()} without a commit deletes them.
 *
 * <p>A part of a plan split over several processes writes some of the layout's shards only: the others'
 * tensors go to a sink that discards them.
 */
public final class SafetensorsWriter implements TensorOutput {
    private static final Map<String, String> SHARD_METADATA = Map.of("format", "pt");
    private static final String PARTIAL_SUFFIX = ".partial";

    private final Path dir;
    private final ShardLayout layout;
    private final Map<String, Open> openShards = new LinkedHashMap<>();
    private final Map<String, TensorSink> sinks = new HashMap<>();
    private final boolean fsync;
    private final java.util.function.IntPredicate writes;
    private final TensorOutput.FinishedFile finished;
    /** Hand each shard's pages to the disk as they are written ({@link dev.moeport.io.WriteBehind}). */
    private final boolean writeBehind;
    private final boolean standalone;
    /** Guarded by this writer: a Ctrl-C hook closes it from its own thread, and sees a whole commit or none. */
    private boolean committed;

    /** Where the tensors of shards this writer does not write go. */
    private static final TensorOutput.Sink DISCARD = (offset, bytes) -> { };

    /** A place to write one tensor's bytes. Thread-safe for disjoint ranges. */
    public final class TensorSink implements TensorOutput.Sink {
        private final String name;
        private final Open shard;
        private final long base;
        private final long size;
        private final AtomicLong written = new AtomicLong();

        private TensorSink(String name, Open shard, long base, long size) {
            this.name = name;
            this.shard = shard;
            this.base = base;
            this.size = size;
        }

        @Override
        public void write(long offset, MemorySegment bytes) {
            long n = bytes.byteSize();
            if (offset < 0 || offset + n > size) {
                throw new IllegalStateException("write of " + n + " bytes at " + offset + " overruns tensor '" + name + "' of " + size + " bytes");
            }
            try {
                shard.file.write(base + offset, bytes);
            } catch (IOException e) {
                throw writeFailure(e);
            }
            written.addAndGet(n);
            if (n > 0 && shard.remaining.addAndGet(-n) == 0 && !standalone) {
                finish(shard);
            }
        }

        private MoeportException writeFailure(IOException e) {
            return new MoeportException(dir.resolve(layout.shardOf(name).fileName()) + ": cannot write tensor '" + name + "' (" + IoErrors.why(e) + ")", e);
        }
    }

    /** A shard being written: its file, its bytes not yet written, and whether it is finished (renamed into place). */
    private static final class Open {
        final PartialFile file;
        final AtomicLong remaining;
        boolean done;

        Open(PartialFile file, long bytes) {
            this.file = file;
            this.remaining = new AtomicLong(bytes);
        }
    }

    private SafetensorsWriter(Path dir, ShardLayout layout, boolean fsync, boolean writeBehind, java.util.function.IntPredicate writes,
            TensorOutput.FinishedFile finished, boolean standalone) {
        this.writeBehind = writeBehind;
        this.dir = dir;
        this.layout = layout;
        this.fsync = fsync;
        this.writes = writes;
        this.finished = finished;
        this.standalone = standalone;
    }

    /**
     * Creates the partial shard files of {@code layout} in {@code dir} (which must exist), writes their
     * headers and reserves their disk space.
     *
     * @param fsync flush each shard to disk before it is renamed into place (survives power loss, not
     *     only a killed process; costs a full write-back)
     */
    public static SafetensorsWriter create(Path dir, ShardLayout layout, boolean fsync) {
        return create(dir, layout, shard -> true, fsync, false, (file, crc) -> { }, true);
    }

    /**
     * As above, for the shards (by index in the layout) that {@code writes} picks; {@code finished} hears of each
     * shard once it is renamed into place, as soon as its last byte is written (into a staging folder). {@code
     * standalone}: the writer writes straight into its folder, so shards are renamed only at the commit, which
     * writes the index too (otherwise {@link #writeIndexFiles()} does, when the caller wants).
     */
    public static SafetensorsWriter create(Path dir, ShardLayout layout, java.util.function.IntPredicate writes, boolean fsync,
            boolean writeBehind, TensorOutput.FinishedFile finished, boolean standalone) {
        SafetensorsWriter writer = new SafetensorsWriter(dir, layout, fsync, writeBehind, writes, finished, standalone);
        try {
            for (int k = 0; k < layout.shards().size(); k++) {
                if (writes.test(k)) {
                    writer.openShard(layout.shards().get(k));
                }
            }
        } catch (RuntimeException e) {
            writer.close();
            throw e;
        }
        return writer;
    }

    private void openShard(ShardLayout.Shard shard) {
        Path target = dir.resolve(shard.fileName());
        Path partial = partialName(target);
        byte[] header = SafetensorsHeader.encode(SHARD_METADATA, shard.entries());
        long dataStart = 8 + header.length;
        try {
            Open open = new Open(new PartialFile(target, dataStart + shard.dataBytes(), writeBehind), shard.dataBytes());
            openShards.put(shard.fileName(), open);
            ByteBuffer head = ByteBuffer.allocate((int) dataStart).order(java.nio.ByteOrder.LITTLE_ENDIAN);
            head.putLong(header.length).put(header).flip();
            open.file.write(0, MemorySegment.ofBuffer(head));
            for (SafetensorsHeader.Entry e : shard.entries().values()) {
                sinks.put(e.name(), new TensorSink(e.name(), open, dataStart + e.begin(), e.byteSize()));
            }
        } catch (IOException e) {
            throw new MoeportException(partial + ": cannot create (" + IoErrors.why(e) + ")", e);
        }
    }

    @Override
    public TensorOutput.Sink sink(String name) {
        TensorSink sink = sinks.get(name);
        if (sink == null) {
            layout.shardOf(name); // a tensor of the layout, in a shard another part writes
            return DISCARD;
        }
        return sink;
    }

    /** A shard whose every byte is written: flushed (with fsync), closed, renamed into place, reported. */
    private void finish(Open open) {
        java.util.OptionalLong crc;
        synchronized (open) {
            if (open.done) {
                return;
            }
            try {
                crc = open.file.finish(fsync);
            } catch (IOException e) {
                throw new MoeportException(open.file.target() + ": cannot finish the shard (" + IoErrors.why(e) + ")", e);
            }
            open.done = true;
        }
        finished.finished(open.file.target(), crc);
    }

    /**
     * Checks that every tensor was written in full, then renames the shards into place and writes the
     * index (for more than one shard) last.
     */
    @Override
    public synchronized void commit() {
        List<String> incomplete = new ArrayList<>();
        for (TensorSink sink : sinks.values()) {
            if (sink.written.get() != sink.size) {
                incomplete.add(sink.name + " (" + sink.written.get() + " of " + sink.size + " bytes)");
            }
        }
        if (!incomplete.isEmpty()) {
            throw new IllegalStateException("tensors not fully written: " + incomplete.subList(0, Math.min(5, incomplete.size())));
        }
        // Shards of zero bytes (or of empty tensors only) have had no write to finish them.
        openShards.values().forEach(this::finish);
        if (standalone) {
            writeIndexFiles();
        }
        if (fsync) {
            syncFolder(dir);
        }
        committed = true;
    }

    /** The index of a sharded layout (a single shard needs none), written atomically. */
    @Override
    public void writeIndexFiles() {
        if (!layout.isSharded()) {
            return;
        }
        try {
            writeIndex();
        } catch (IOException e) {
            throw new MoeportException(dir + ": cannot write the index (" + IoErrors.why(e) + ")", e);
        }
    }

    private void writeIndex() throws IOException {
        ObjectMapper json = new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT);
        ObjectNode root = json.createObjectNode();
        root.putObject("metadata").put("total_size", layout.totalBytes());
        ObjectNode weightMap = root.putObject("weight_map");
        layout.shards().stream()
                .flatMap(s -> s.entries().keySet().stream().map(n -> Map.entry(n, s.fileName())))
                .sorted(Map.Entry.comparingByKey())
                .forEach(e -> weightMap.put(e.getKey(), e.getValue()));
        writeAtomically(dir.resolve(SafetensorsCheckpoint.INDEX_NAME), json.writeValueAsBytes(root), fsync);
    }

    /** Writes {@code bytes} to {@code target} through a hidden partial file and a rename. */
    public static void writeAtomically(Path target, byte[] bytes, boolean fsync) throws IOException {
        Path partial = partialName(target);
        try (FileChannel channel = FileChannel.open(partial, StandardOpenOption.CREATE, StandardOpenOption.TRUNCATE_EXISTING,
                StandardOpenOption.WRITE)) {
            ByteBuffer buffer = ByteBuffer.wrap(bytes);
            while (buffer.hasRemaining()) {
                channel.write(buffer);
            }
            if (fsync) {
                channel.force(true);
            }
        }
        Files.move(partial, target, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
    }

    /** Copies {@code source} to {@code target} through a hidden partial file and a rename, streaming. */
    public static void copyAtomically(Path source, Path target, boolean fsync) throws IOException {
        Path partial = partialName(target);
        Files.copy(source, partial, StandardCopyOption.REPLACE_EXISTING);
        if (fsync) {
            try (FileChannel channel = FileChannel.open(partial, StandardOpenOption.WRITE)) {
                channel.force(true);
            }
        }
        Files.move(partial, target, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
    }

    /** Flushes a folder's entries (the renames done in it) to disk, where the platform allows it. */
    public static void syncFolder(Path dir) {
        try (FileChannel channel = FileChannel.open(dir, StandardOpenOption.READ)) {
            channel.force(true);
        } catch (IOException e) {
            // Some platforms cannot open a folder: its entries then reach the disk with the file system's own journal.
        }
    }

    /** The hidden name a file has while it is being written. */
    public static Path partialName(Path target) {
        return target.resolveSibling("." + target.getFileName() + PARTIAL_SUFFIX);
    }

    /** Whether {@code file} is a leftover of an unfinished write. */
    public static boolean isPartial(Path file) {
        String name = file.getFileName().toString();
        return name.startsWith(".") && name.endsWith(PARTIAL_SUFFIX);
    }

    /** Without a commit, closes and deletes the partial files; after one, does nothing. */
    @Override
    public synchronized void close() {
        if (committed) {
            return;
        }
        for (Open open : openShards.values()) {
            synchronized (open) { // a worker may be finishing it
                if (!open.done) { // finished files stay: a resumed run reuses them
                    open.file.abandon();
                }
            }
        }
        openShards.clear();
    }
}
