package dev.moeport.format.torchdist;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.moeport.MoeportException;
import dev.moeport.format.Checkpoint;
import dev.moeport.format.torchdist.TorchDistMetadata.Box;
import dev.moeport.format.torchdist.TorchDistMetadata.BytesEntry;
import dev.moeport.format.torchdist.TorchDistMetadata.ChunkKey;
import dev.moeport.format.torchdist.TorchDistMetadata.Entry;
import dev.moeport.format.torchdist.TorchDistMetadata.StorageInfo;
import dev.moeport.format.torchdist.TorchDistMetadata.TensorEntry;
import dev.moeport.io.DropBehind;
import dev.moeport.io.IoErrors;
import dev.moeport.tensor.Shape;
import dev.moeport.tensor.Tensor;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.Comparator;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.SequencedMap;
import java.util.Set;

/**
 * A Megatron {@code torch_dist} checkpoint (PyTorch Distributed Checkpoint): the folder's
 * {@code .metadata} says which chunks make up each tensor and where in the {@code __<rank>_<n>.distcp}
 * files each chunk's {@code torch.save} zip lies. The data files are mapped in one shared arena; the
 * tensors are lazy views over them, with Megatron's keys presented as per-layer Megatron-Core names
 * ({@link MegatronKeys}).
 */
public final class TorchDistCheckpoint implements Checkpoint {
    public static final String METADATA = ".metadata";
    private static final String MEGATRON_METADATA = "metadata.json";
    static final String LATEST = "latest_checkpointed_iteration.txt";
    /** Where Megatron before 2026 kept the common state. */
    private static final String LEGACY_COMMON = "common.pt";
    private static final long MAX_SMALL_FILE = 1 << 20;
    /** Far above any model's depth; a larger layer axis in hostile metadata would only cost memory. */
    private static final long MAX_LAYERS = 1 << 16;
    private static final ObjectMapper JSON = new ObjectMapper();

    private final Path location;
    private final Arena arena;
    private final SequencedMap<String, Tensor> tensors;
    private final SequencedMap<String, String> skipped;

    private TorchDistCheckpoint(Path location, Arena arena, SequencedMap<String, Tensor> tensors, SequencedMap<String, String> skipped) {
        this.location = location;
        this.arena = arena;
        this.tensors = Collections.unmodifiableSequencedMap(tensors);
        this.skipped = Collections.unmodifiableSequencedMap(skipped);
    }

    /**
     * True when {@code path} is a torch_dist checkpoint: its {@code .metadata} file, a folder holding
     * one, a folder whose {@code metadata.json} names a sharded backend, or a Megatron save folder with
     * {@code latest_checkpointed_iteration.txt}.
     */
    public static boolean recognizes(Path path) {
        if (Files.isRegularFile(path)) {
            return path.getFileName().toString().equals(METADATA);
        }
        return Files.isDirectory(path) && (Files.isRegularFile(path.resolve(METADATA)) || Files.isRegularFile(path.resolve(LATEST))
                || shardedBackend(path.resolve(MEGATRON_METADATA)) != null);
    }

    /** Opens the checkpoint at {@code path} (see {@link #recognizes}); nothing but its metadata is read. */
    public static TorchDistCheckpoint open(Path path) {
        Path folder = folder(path);
        Arena arena = Arena.ofShared();
        try {
            TorchDistMetadata metadata;
            try (Arena reading = Arena.ofConfined()) {
                Path file = folder.resolve(METADATA);
                metadata = TorchDistMetadata.parse(map(file, reading), file.toString());
            }
            return assemble(path, folder, metadata, arena);
        } catch (RuntimeException e) {
            arena.close();
            throw e;
        }
    }

    /** The bytes of a data file that a chunk's zip takes. */
    private record FileRange(long offset, long length, ChunkKey chunk) {}

    private static TorchDistCheckpoint assemble(Path location, Path folder, TorchDistMetadata metadata, Arena arena) {
        Map<String, MemorySegment> files = new HashMap<>();
        Map<String, List<FileRange>> ranges = new HashMap<>();
        SequencedMap<String, Tensor> tensors = new LinkedHashMap<>();
        SequencedMap<String, String> skipped = new LinkedHashMap<>();
        Map<String, String> objectLabels = new HashMap<>();
        for (Map.Entry<String, Entry> e : metadata.entries().entrySet()) {
            String key = e.getKey();
            String reason = MegatronKeys.skipReason(key, e.getValue() instanceof BytesEntry);
            if (reason != null) {
                if (e.getValue() instanceof BytesEntry && MegatronKeys.isLabelledByContent(key)) {
                    // The shards of one object key hold the same kind of state: read the first only.
                    reason = objectLabels.computeIfAbsent(MegatronKeys.objectKey(key), k -> objectLabel(folder, key, metadata, files, arena));
                }
                skipped.put(key, reason);
                continue;
            }
            TensorEntry entry = (TensorEntry) e.getValue();
            List<Chunk> chunks = new ArrayList<>();
            for (Box box : entry.chunks()) {
                chunks.add(chunk(folder, key, box, metadata.storage(), files, ranges, arena));
            }
            SavedTensor saved = new SavedTensor(key, entry.dtype(), entry.size(), chunks, folder);
            if (MegatronKeys.isLayerStacked(key)) {
                if (entry.size().length == 0 || entry.size()[0] > MAX_LAYERS) {
                    throw new MoeportException(saved.where() + ": a layer-stacked key needs a leading layer axis of at most "
                            + MAX_LAYERS + " layers, not " + Shape.of(entry.size()));
                }
                ChunkedTensor whole = ChunkedTensor.of(key, saved);
                for (long layer = 0; layer < entry.size()[0]; layer++) {
                    put(tensors, whole.select(layer, MegatronKeys.layerName(key, layer)), saved);
                }
            } else {
                put(tensors, ChunkedTensor.of(MegatronKeys.undoubled(key), saved), saved);
            }
        }
        ranges.forEach((name, list) -> requireDisjoint(folder.resolve(name), list));
        return new TorchDistCheckpoint(location, arena, tensors, skipped);
    }

    /**
     * Each chunk has bytes of its own: PyTorch writes every chunk once. This also bounds what the
     * tensors claim by the size of the files.
     */
    private static void requireDisjoint(Path file, List<FileRange> ranges) {
        ranges.sort(Comparator.comparingLong(FileRange::offset));
        for (int i = 1; i < ranges.size(); i++) {
            FileRange a = ranges.get(i - 1);
            FileRange b = ranges.get(i);
            if (b.offset() < a.offset() + a.length()) {
                throw new MoeportException(file + ": chunks " + TorchDistMetadata.describe(a.chunk()) + " and "
                        + TorchDistMetadata.describe(b.chunk()) + " share bytes from " + b.offset());
            }
        }
    }

    private static void put(SequencedMap<String, Tensor> tensors, Tensor tensor, SavedTensor saved) {
        Tensor earlier = tensors.putIfAbsent(tensor.name(), tensor);
        if (earlier != null) {
            throw new MoeportException(saved.where() + ": presents '" + tensor.name() + "', which " + earlier.where() + " presents too");
        }
    }

    private static Chunk chunk(Path folder, String key, Box box, Map<ChunkKey, StorageInfo> storage, Map<String, MemorySegment> files,
                               Map<String, List<FileRange>> ranges, Arena arena) {
        ChunkKey chunkKey = new ChunkKey(key, Arrays.stream(box.offsets()).boxed().toList());
        StorageInfo info = storage.get(chunkKey);
        Path metadataFile = folder.resolve(METADATA);
        if (info == null) {
            throw new MoeportException(metadataFile + ": names no data file for chunk " + TorchDistMetadata.describe(chunkKey));
        }
        if (info.transformed()) {
            throw new MoeportException(metadataFile + ": chunk " + TorchDistMetadata.describe(chunkKey)
                    + " was saved through a transform (e.g. compression), which moeport does not read");
        }
        String name = info.relativePath();
        if (!isPlainFileName(name)) {
            throw new MoeportException(metadataFile + ": chunk " + TorchDistMetadata.describe(chunkKey) + " names '" + name
                    + "', which is not a file of the checkpoint folder");
        }
        MemorySegment bytes = slice(folder, chunkKey, info, files, arena);
        ranges.computeIfAbsent(name, n -> new ArrayList<>()).add(new FileRange(info.offset(), info.length(), chunkKey));
        return new Chunk(box.offsets(), box.sizes(), bytes, folder.resolve(name), info.offset());
    }

    /** The bytes {@code info} names: a slice of its data file, mapped once into {@code files}. */
    private static MemorySegment slice(Path folder, ChunkKey chunkKey, StorageInfo info, Map<String, MemorySegment> files, Arena arena) {
        String name = info.relativePath();
        Path file = folder.resolve(name);
        MemorySegment data = files.get(name);
        if (data == null) {
            if (!Files.isRegularFile(file)) {
                throw new MoeportException(folder.resolve(METADATA) + ": names data file '" + name + "' (for "
                        + TorchDistMetadata.describe(chunkKey) + "), which does not exist");
            }
            data = map(file, arena);
            files.put(name, data);
        }
        if (info.offset() > data.byteSize() || info.length() > data.byteSize() - info.offset()) {
            // offset + length may overflow in hostile metadata: name both
            throw new MoeportException(file + ": chunk " + TorchDistMetadata.describe(chunkKey) + " of " + info.length() + " bytes at byte "
                    + info.offset() + " lies beyond the end of the file (" + data.byteSize() + " bytes; truncated?)");
        }
        return data.asSlice(info.offset(), info.length());
    }

    /**
     * The object a bytes entry (a Megatron ShardedObject) holds, unwrapped from the one-element list
     * Megatron saves it in; null when the metadata names no bytes for it.
     */
    private static Object shardedObject(Path folder, String key, Map<ChunkKey, StorageInfo> storage, Map<String, MemorySegment> files,
                                        Arena arena) {
        ChunkKey chunkKey = new ChunkKey(key, null);
        StorageInfo info = storage.get(chunkKey);
        if (info == null || info.transformed() || !isPlainFileName(info.relativePath())) {
            return null;
        }
        Object content = TorchSave.object(slice(folder, chunkKey, info, files, arena), folder.resolve(info.relativePath()) + " entry '" + key + "'",
                MegatronKeys.OBJECT_GLOBALS);
        return content instanceof Pickle.PyList(List<Object> items) && items.size() == 1 ? items.getFirst() : content;
    }

    private static boolean isPlainFileName(String name) {
        return !(name.isEmpty() || name.equals(".") || name.equals("..") || name.indexOf('/') >= 0 || name.indexOf('\\') >= 0
                || name.indexOf('\0') >= 0);
    }

    /** What a skipped bytes entry holds, read from its content; a label, so an unreadable one is named, not fatal. */
    private static String objectLabel(Path folder, String key, TorchDistMetadata metadata, Map<String, MemorySegment> files, Arena arena) {
        try {
            return MegatronKeys.objectLabel(key, shardedObject(folder, key, metadata.storage(), files, arena));
        } catch (MoeportException e) {
            return MegatronKeys.skipReason(key, true) + " (unreadable)";
        }
    }

    /**
     * Megatron's common (non-sharded) state of the checkpoint at {@code path} as plain values (maps,
     * lists, strings, numbers): the {@code common_state} entry that Megatron-Core of 2026 writes, or an
     * older Megatron's {@code common.pt}; null when it has neither. Refuses a state holding anything but
     * plain Python data.
     */
    public static Object commonState(Path path) {
        Path folder = folder(path);
        Path legacy = folder.resolve(LEGACY_COMMON);
        try (Arena arena = Arena.ofConfined()) {
            if (Files.isRegularFile(legacy)) {
                return Pickle.plain(TorchSave.object(map(legacy, arena), legacy.toString(), Set.of()), legacy.toString(), "the common state");
            }
            Path file = folder.resolve(METADATA);
            TorchDistMetadata metadata = TorchDistMetadata.parse(map(file, arena), file.toString());
            if (!(metadata.entries().get(MegatronKeys.COMMON_STATE) instanceof BytesEntry)) {
                return null;
            }
            Object content = shardedObject(folder, MegatronKeys.COMMON_STATE, metadata.storage(), new HashMap<>(), arena);
            if (content == null) {
                throw new MoeportException(file + ": names no data file for '" + MegatronKeys.COMMON_STATE + "'");
            }
            return Pickle.plain(content, folder + " entry '" + MegatronKeys.COMMON_STATE + "'", "the common state");
        }
    }

    /** The folder holding {@code .metadata} that {@code path} designates (an {@code iter_*} folder for a tracker folder). */
    public static Path dataFolder(Path path) {
        return folder(path);
    }

    private static Path folder(Path path) {
        if (Files.isRegularFile(path)) {
            return path.toAbsolutePath().getParent();
        }
        Path folder = path;
        if (!Files.isRegularFile(folder.resolve(METADATA)) && Files.isRegularFile(folder.resolve(LATEST))) {
            folder = folder.resolve(iterationFolder(folder.resolve(LATEST)));
            if (!Files.isDirectory(folder)) {
                throw new MoeportException(path.resolve(LATEST) + ": names iteration folder '" + folder.getFileName()
                        + "', which does not exist (an interrupted save, or a copy without it?)");
            }
        }
        String backend = shardedBackend(folder.resolve(MEGATRON_METADATA));
        if (backend != null && !backend.equals("torch_dist")) {
            throw new MoeportException(folder.resolve(MEGATRON_METADATA) + ": sharded_backend '" + backend
                    + "' is not supported (moeport reads torch_dist)");
        }
        if (!Files.isRegularFile(folder.resolve(METADATA))) {
            throw new MoeportException(folder + ": no " + METADATA + " file in this folder (not a torch_dist checkpoint, or incomplete)");
        }
        return folder;
    }

    /** Megatron's {@code iter_0000123} (or {@code release}) folder that the tracker file names. */
    private static String iterationFolder(Path tracker) {
        String text = new String(readSmall(tracker), StandardCharsets.UTF_8).strip();
        if (text.equals("release")) {
            return "release";
        }
        if (!text.matches("\\d{1,9}")) {
            throw new MoeportException(tracker + ": expected an iteration number or 'release', found '"
                    + (text.length() > 40 ? text.substring(0, 40) + "..." : text) + "'");
        }
        return String.format("iter_%07d", Integer.parseInt(text));
    }

    /** The {@code sharded_backend} a Megatron {@code metadata.json} names, or null when there is none. */
    private static String shardedBackend(Path file) {
        if (!Files.isRegularFile(file)) {
            return null;
        }
        try {
            JsonNode backend = JSON.readTree(readSmall(file)).get("sharded_backend");
            return backend != null && backend.isTextual() ? backend.textValue() : null;
        } catch (IOException | RuntimeException e) {
            return null; // not Megatron's metadata.json
        }
    }

    private static byte[] readSmall(Path file) {
        try {
            if (Files.size(file) > MAX_SMALL_FILE) {
                throw new MoeportException(file + ": larger than " + MAX_SMALL_FILE + " bytes");
            }
            return Files.readAllBytes(file);
        } catch (IOException e) {
            throw new MoeportException(file + ": cannot read (" + IoErrors.why(e) + ")", e);
        }
    }

    private static MemorySegment map(Path file, Arena arena) {
        try (FileChannel channel = FileChannel.open(file, StandardOpenOption.READ)) {
            long size = channel.size();
            if (size == 0) {
                return arena.allocate(0);
            }
            MemorySegment mapping = channel.map(FileChannel.MapMode.READ_ONLY, 0, size, arena);
            DropBehind.track(mapping, file, 0, arena);
            return mapping;
        } catch (NoSuchFileException e) {
            throw new MoeportException(file + ": no such file");
        } catch (IOException e) {
            throw new MoeportException(file + ": cannot read (" + IoErrors.why(e) + ")", e);
        }
    }

    @Override
    public Path location() {
        return location;
    }

    @Override
    public String format() {
        return "torch_dist";
    }

    @Override
    public SequencedMap<String, Tensor> tensors() {
        return tensors;
    }

    @Override
    public SequencedMap<String, String> skipped() {
        return skipped;
    }

    @Override
    public void close() {
        arena.close();
    }
}
