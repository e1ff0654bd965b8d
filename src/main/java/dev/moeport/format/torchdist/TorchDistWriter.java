package dev.moeport.format.torchdist;

import dev.moeport.MoeportException;
import dev.moeport.format.PartialFile;
import dev.moeport.format.TensorOutput;
import dev.moeport.format.safetensors.SafetensorsHeader;
import dev.moeport.format.safetensors.SafetensorsWriter;
import dev.moeport.format.safetensors.ShardLayout;
import dev.moeport.format.torchdist.PickleWriter.Call;
import dev.moeport.format.torchdist.PickleWriter.Global;
import dev.moeport.format.torchdist.PickleWriter.NewObject;
import dev.moeport.format.torchdist.PickleWriter.PersistentId;
import dev.moeport.format.torchdist.PickleWriter.Tuple;
import dev.moeport.io.IoErrors;
import dev.moeport.io.WrittenCrc;
import dev.moeport.tensor.DType;
import dev.moeport.tensor.Shape;
import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicLong;
import java.util.zip.CRC32;

/**
 * Writes Megatron-LM's {@code torch_dist} checkpoint folder, streaming: {@code OUT/iter_0000000/} holds
 * {@code __<k>_0.distcp} data files (one per shard of the plan's layout), {@code .metadata} (PyTorch
 * Distributed Checkpoint's pickle), {@code metadata.json} and, as Megatron-Core of 2026 writes it, the
 * common state as the bytes entry {@code common_state/shard_0_1}; {@code OUT/latest_checkpointed_iteration.txt}
 * says {@code 0}. Each chunk of a tensor is a {@code torch.save} zip in a data file ({@link TorchSaveZip}),
 * laid out before a byte moves; producers fill the tensor data in place, in order within each tensor
 * (the zip's CRC-32 is computed on the way).
 *
 * <p>Crash safety as for safetensors: data files are hidden partial files until their last chunk is written,
 * then renamed into place (and reported, for a resume manifest); {@link #writeIndexFiles()} writes
 * {@code .metadata} and {@code metadata.json}, then the tracker file last: all of it in a staging folder
 * that is switched in whole, so Megatron-LM never sees a checkpoint before it is complete. A part of a plan
 * split over processes writes some of the data files only; the others' tensors go to a sink that discards them.
 */
public final class TorchDistWriter implements TensorOutput {
    public static final String ITERATION_DIR = "iter_0000000";
    private static final String METADATA_MODULE = "torch.distributed.checkpoint.metadata";

    private final Path out;
    private final Path dir;
    /** The iteration folder once the output is switched into place: the checkpoint's id in {@code .metadata}. */
    private final Path finalDir;
    private final boolean fsync;
    private final List<DataFile> files = new ArrayList<>();
    private final Map<String, TensorPlace> places = new LinkedHashMap<>();
    /** Entries of the checkpoint in the order of {@code .metadata}: tensors (by key) and bytes entries. */
    private final Map<String, List<ChunkPlace>> tensorEntries = new LinkedHashMap<>();
    private final Map<String, DType> tensorDtypes = new LinkedHashMap<>();
    private final Map<String, long[]> tensorShapes = new LinkedHashMap<>();
    private final List<BytesPlace> bytesEntries = new ArrayList<>();
    private final TensorOutput.FinishedFile finished;
    /** Guarded by this writer: a Ctrl-C hook closes it from its own thread, and sees a whole commit or none. */
    private boolean committed;

    /** One data file: laid out first, then written (when this part writes it). */
    private static final class DataFile {
        final String name;
        final Path target;
        long length;
        /** The file being written; null for a file another part (or a resumed run) writes. */
        PartialFile out;
        /** Tensor bytes not yet written; the file is finished when none are left. */
        final AtomicLong remaining = new AtomicLong();
        boolean done;

        DataFile(Path dir, int index) {
            this.name = "__" + index + "_0.distcp";
            this.target = dir.resolve(name);
        }
    }

    /** One chunk: its box in the global tensor, its zip in a data file, and the writes of its bytes (their CRC-32, their count). */
    private static final class ChunkPlace {
        final long[] offsets;
        final long[] sizes;
        final DataFile file;
        final long zipOffset;
        final TorchSaveZip zip;
        final long dataBytes;
        /** The writes of the chunk's bytes, in any order: the zip entry's CRC-32 ({@link WrittenCrc}). */
        final WrittenCrc crc = WrittenCrc.crc32();

        ChunkPlace(long[] offsets, long[] sizes, DataFile file, long zipOffset, TorchSaveZip zip, long dataBytes) {
            this.offsets = offsets;
            this.sizes = sizes;
            this.file = file;
            this.zipOffset = zipOffset;
            this.zip = zip;
            this.dataBytes = dataBytes;
        }

        long dataStart() {
            return zipOffset + zip.dataOffset();
        }
    }

    private record BytesPlace(String key, DataFile file, long offset, TorchSaveZip zip) {}

    /** An output tensor's bytes: consecutive chunks of one checkpoint key. */
    private final class TensorPlace implements TensorOutput.Sink {
        final String name;
        final List<ChunkPlace> chunks;
        final long[] starts;

        TensorPlace(String name, List<ChunkPlace> chunks) {
            this.name = name;
            this.chunks = chunks;
            this.starts = new long[chunks.size() + 1];
            for (int i = 0; i < chunks.size(); i++) {
                starts[i + 1] = starts[i] + chunks.get(i).dataBytes;
            }
        }

        @Override
        public void write(long offset, MemorySegment bytes) {
            long end = offset + bytes.byteSize();
            if (offset < 0 || end > starts[chunks.size()]) {
                throw new IllegalStateException("write of " + bytes.byteSize() + " bytes at " + offset + " overruns tensor '" + name + "'");
            }
            for (int i = 0; i < chunks.size() && offset < end; i++) {
                if (offset >= starts[i + 1]) {
                    continue;
                }
                ChunkPlace c = chunks.get(i);
                long n = Math.min(end, starts[i + 1]) - offset;
                writeChunk(c, offset - starts[i], bytes.asSlice(bytes.byteSize() - (end - offset), n));
                offset += n;
            }
        }

        private void writeChunk(ChunkPlace c, long at, MemorySegment part) {
            CRC32 crc = new CRC32();
            try {
                c.file.out.write(c.dataStart() + at, part, crc::update);
            } catch (IOException e) {
                throw writeFailure(c.file, e);
            }
            c.crc.record(at, part.byteSize(), (int) crc.getValue());
            if (part.byteSize() > 0 && c.file.remaining.addAndGet(-part.byteSize()) == 0) {
                finish(c.file);
            }
        }
    }

    /**
     * How the plan's tensors become checkpoint keys and chunks.
     *
     * @param stackLayers whether {@code decoder.layers.<i>.<rest>} tensors go under one layer-stacked key
     *     {@code decoder.layers.<rest>} {@code [L, ...]} (Megatron-Core's form for homogeneous layers)
     * @param layerCount L, for the stacked keys
     * @param gatedFc1 output tensors holding {@code [gate ; up]} rows, saved as two chunks as Megatron-Core does
     * @param linears the linear modules whose (empty) {@code _extra_state} Megatron-Core saves and expects back,
     *     with their number of experts (0: not an expert module)
     * @param rename the name the user's layer spec gives each output tensor
     * @param sections output tensors Megatron-Core saves as one key per row section ({@code <key>.<section>}), with each
     *     section's rows in order
     */
    public record Naming(boolean stackLayers, long layerCount, java.util.Set<String> gatedFc1, Map<String, Long> linears,
                         java.util.function.UnaryOperator<String> rename, Map<String, java.util.SequencedMap<String, Long>> sections) {

        /** The linear modules of {@code tensors} (name to shape), as Megatron-Core's checkpoints hold them. */
        public static Map<String, Long> linearsOf(Map<String, Shape> tensors) {
            Map<String, Long> linears = new LinkedHashMap<>();
            tensors.forEach((name, shape) -> {
                // linear_*: attention and MLP; in_proj and out_proj: Mamba's and Gated DeltaNet's (mamba_mixer.py, gdn.py)
                // output_layer: HybridModel (its stack's decoder.final_norm) saves it; GPTModel drops it
                // (gpt_model.py sharded_state_dict, "output_layer._extra_state").
                boolean hybridOutput = name.equals("output_layer.weight") && tensors.containsKey("decoder.final_norm.weight");
                if (hybridOutput || name.matches(".*\\.(linear_[a-z0-9_]+|in_proj|out_proj)\\.weight")) {
                    String module = name.substring(0, name.length() - ".weight".length());
                    linears.put(module, MegatronKeys.isExpertStack(name) && shape.rank() == 3 ? shape.dim(0) : 0L);
                }
            });
            return linears;
        }
    }

    private TorchDistWriter(Path out, Path destination, boolean fsync, TensorOutput.FinishedFile finished) {
        this.out = out;
        this.dir = out.resolve(ITERATION_DIR);
        this.finalDir = destination.resolve(ITERATION_DIR);
        this.fsync = fsync;
        this.finished = finished;
    }

    /** The data file that holds shard {@code k} of the layout, relative to the output folder. */
    public static String dataFile(int k) {
        return ITERATION_DIR + "/" + new DataFile(Path.of(""), k).name;
    }

    /**
     * Creates {@code OUT/iter_0000000/} and the partial data files, of those that {@code writes} picks (by shard
     * index in {@code layout}), for the tensors of {@code layout}; {@code finished} hears of each file once it is
     * renamed into place. {@code destination} is the folder {@code out} becomes once complete (PyTorch's writer names
     * the folder it writes in {@code .metadata}: the checkpoint's id).
     */
    public static TorchDistWriter create(Path out, Path destination, ShardLayout layout, Naming naming, java.util.function.IntPredicate writes,
            boolean fsync, boolean writeBehind, TensorOutput.FinishedFile finished) {
        TorchDistWriter writer = new TorchDistWriter(out, destination, fsync, finished);
        try {
            Files.createDirectories(writer.dir);
            writer.lay(layout, naming);
            for (int k = 0; k < writer.files.size(); k++) {
                DataFile f = writer.files.get(k);
                if (!writes.test(k)) {
                    f.done = true; // another part's (or a resumed run's) file
                    continue;
                }
                f.out = new PartialFile(f.target, f.length, writeBehind);
            }
        } catch (IOException e) {
            writer.close();
            throw new MoeportException(writer.dir + ": cannot create the checkpoint's files (" + IoErrors.why(e) + ")", e);
        } catch (RuntimeException e) {
            writer.close();
            throw e;
        }
        return writer;
    }

    private void lay(ShardLayout layout, Naming naming) {
        for (int k = 0; k < layout.shards().size(); k++) {
            DataFile file = new DataFile(dir, k);
            files.add(file);
            for (SafetensorsHeader.Entry e : layout.shards().get(k).entries().values()) {
                places.put(e.name(), new TensorPlace(e.name(), layChunks(e, naming, file)));
            }
        }
        DataFile first = files.isEmpty() ? newFile() : files.getFirst();
        for (Map.Entry<String, Long> linear : naming.linears().entrySet()) {
            String weight = MegatronKeys.doubled(naming.rename().apply(linear.getKey() + ".weight"));
            String key = MegatronKeys.stackedOrNot(weight.substring(0, weight.length() - ".weight".length()), naming.stackLayers());
            for (String shard : extraStateShards(linear.getKey(), linear.getValue(), naming)) {
                addBytes(key + "._extra_state/" + shard, first, PickleWriter.pickle(java.util.Collections.singletonList(null)));
            }
        }
        // Megatron-LM reads the iteration and checkpoint version from the common state (weights-only safe).
        Map<String, Object> common = new LinkedHashMap<>();
        common.put("checkpoint_version", 3.0);
        common.put("iteration", 0L);
        addBytes("common_state/shard_0_1", first, PickleWriter.pickle(List.of(common)));
    }

    private DataFile newFile() {
        DataFile f = new DataFile(dir, files.size());
        files.add(f);
        return f;
    }

    private void addBytes(String key, DataFile file, byte[] pickle) {
        TorchSaveZip zip = TorchSaveZip.object(pickle);
        bytesEntries.add(new BytesPlace(key, file, file.length, zip));
        file.length += zip.length();
    }

    /** The ShardedObject shard suffixes of one linear's extra state: its layer (if stacked) and expert boxes. */
    private static List<String> extraStateShards(String linear, long experts, Naming naming) {
        String layerOffset = naming.stackLayers() && MegatronKeys.layerOf(linear) >= 0 ? MegatronKeys.layerOf(linear) + "" : null;
        if (experts == 0) {
            return List.of(layerOffset == null ? "shard_0_1" : "shard_" + layerOffset + "_" + naming.layerCount());
        }
        List<String> shards = new ArrayList<>();
        for (long e = 0; e < experts; e++) {
            shards.add(layerOffset == null ? "shard_" + e + "_" + experts
                    : "shard_" + layerOffset + "." + e + "_" + naming.layerCount() + "." + experts);
        }
        return shards;
    }

    private List<ChunkPlace> layChunks(SafetensorsHeader.Entry e, Naming naming, DataFile file) {
        String renamed = naming.rename().apply(e.name());
        long[] shape = e.shape().toArray();
        boolean stacked = naming.stackLayers() && MegatronKeys.layerOf(renamed) >= 0;
        String key = MegatronKeys.stackedOrNot(MegatronKeys.doubled(renamed), naming.stackLayers());
        long[] global = stacked ? prepend(naming.layerCount(), shape) : shape;
        long[] lead = stacked ? new long[] {MegatronKeys.layerOf(renamed)} : new long[0];
        java.util.SequencedMap<String, Long> sections = naming.sections().get(e.name());
        if (sections != null) {
            return laySections(e, key, sections, stacked ? naming.layerCount() : -1, lead, file);
        }
        // Experts stacked [E, out, in] are saved one chunk per expert; a gated fc1 as gate and up halves.
        boolean experts = MegatronKeys.isExpertStack(renamed) && shape.length == 3;
        boolean gated = naming.gatedFc1().contains(e.name());
        List<long[][]> boxes = new ArrayList<>(); // {offsets, sizes} within the output tensor
        long count = experts ? shape[0] : 1;
        for (long x = 0; x < count; x++) {
            long[] inner = experts ? Arrays.copyOfRange(shape, 1, shape.length) : shape;
            long[] exp = experts ? new long[] {x} : new long[0];
            int halves = gated && inner.length >= 1 ? 2 : 1;
            for (int h = 0; h < halves; h++) {
                long[] off = new long[inner.length];
                long[] size = inner.clone();
                if (halves == 2) {
                    size[0] = inner[0] / 2;
                    off[0] = h * size[0];
                }
                boxes.add(new long[][] {concat(exp, off), concat(experts ? new long[] {1} : new long[0], size)});
            }
        }
        tensorDtypes.put(key, e.dtype());
        tensorShapes.put(key, global);
        List<ChunkPlace> chunks = new ArrayList<>();
        for (long[][] box : boxes) {
            chunks.add(layChunk(key, e, concat(lead, box[0]), concat(stacked ? new long[] {1} : new long[0], box[1]), file));
        }
        return chunks;
    }

    /** A tensor saved as one key per row section, each key one chunk (a layer of it, when stacked: {@code layers} >= 0). */
    private List<ChunkPlace> laySections(SafetensorsHeader.Entry e, String key, java.util.SequencedMap<String, Long> sections, long layers,
            long[] lead, DataFile file) {
        long[] shape = e.shape().toArray();
        long rows = sections.values().stream().mapToLong(Long::longValue).sum();
        if (shape.length == 0 || shape[0] != rows) {
            throw new IllegalStateException("tensor '" + e.name() + "' " + e.shape() + " does not have the " + rows + " rows of its sections " + sections);
        }
        List<ChunkPlace> chunks = new ArrayList<>();
        sections.forEach((section, n) -> {
            String sectionKey = key + "." + section;
            long[] box = shape.clone();
            box[0] = n;
            tensorDtypes.put(sectionKey, e.dtype());
            tensorShapes.put(sectionKey, layers >= 0 ? prepend(layers, box) : box);
            chunks.add(layChunk(sectionKey, e, concat(lead, new long[box.length]), concat(layers >= 0 ? new long[] {1} : new long[0], box), file));
        });
        return chunks;
    }

    /** One chunk of {@code key} at {@code offsets} of {@code sizes}, its zip placed next in {@code file}. */
    private ChunkPlace layChunk(String key, SafetensorsHeader.Entry e, long[] offsets, long[] sizes, DataFile file) {
        long bytes = e.dtype().byteSize(Shape.of(sizes).numel());
        TorchSaveZip zip = TorchSaveZip.tensor(tensorPickle(e.dtype(), sizes, e.name()), bytes);
        ChunkPlace c = new ChunkPlace(offsets, sizes, file, file.length, zip, bytes);
        file.length += zip.length();
        file.remaining.addAndGet(bytes);
        tensorEntries.computeIfAbsent(key, k -> new ArrayList<>()).add(c);
        return c;
    }

    /** {@code data.pkl} of a chunk: {@code _rebuild_tensor_v2} over storage '0' of a typed storage class. */
    private static byte[] tensorPickle(DType dtype, long[] sizes, String name) {
        String storage = TorchTypes.TYPED_STORAGES.entrySet().stream().filter(en -> en.getValue() == dtype)
                .map(Map.Entry::getKey).findFirst()
                .orElseThrow(() -> new MoeportException("tensor '" + name + "': " + dtype + " cannot be written to torch_dist"));
        long[] strides = new long[sizes.length];
        long stride = 1;
        for (int i = sizes.length - 1; i >= 0; i--) {
            strides[i] = stride;
            stride *= sizes[i];
        }
        Object persistent = new PersistentId(List.of("storage", new Global("torch", storage), "0", "cpu", Shape.of(sizes).numel()));
        return PickleWriter.pickle(new Call(new Global("torch._utils", "_rebuild_tensor_v2"), List.of(
                persistent, 0L, longs(sizes), longs(strides), false, new Call(new Global("collections", "OrderedDict"), List.of()))));
    }

    private static Tuple longs(long[] values) {
        return new Tuple(Arrays.stream(values).boxed().toList());
    }

    private static long[] prepend(long first, long[] rest) {
        return concat(new long[] {first}, rest);
    }

    private static long[] concat(long[] a, long[] b) {
        long[] r = Arrays.copyOf(a, a.length + b.length);
        System.arraycopy(b, 0, r, a.length, b.length);
        return r;
    }

    @Override
    public TensorOutput.Sink sink(String name) {
        TensorPlace place = places.get(name);
        if (place == null) {
            throw new IllegalArgumentException("tensor '" + name + "' is not in this output");
        }
        // A tensor of a file another part writes (each tensor's chunks lie in one file).
        return place.chunks.isEmpty() || place.chunks.getFirst().file.out != null ? place : (offset, bytes) -> { };
    }

    /** A data file whose chunks are all written: the zip headers with their CRCs, flushed, closed, renamed, reported. */
    private void finish(DataFile f) {
        java.util.OptionalLong crc;
        synchronized (f) {
            if (f.done) {
                return;
            }
            for (List<ChunkPlace> chunks : tensorEntries.values()) {
                for (ChunkPlace c : chunks) {
                    if (c.file == f) {
                        int zipCrc = (int) c.crc.of(c.dataBytes).orElseThrow(() -> new IllegalStateException(
                                "a chunk of " + f.target + " was written with a gap or twice"));
                        write(c.file, c.zipOffset, c.zip.prefix(zipCrc));
                        write(c.file, c.dataStart() + c.dataBytes, c.zip.suffix(zipCrc));
                    }
                }
            }
            for (BytesPlace b : bytesEntries) {
                if (b.file() == f) {
                    write(b.file(), b.offset(), b.zip().prefix(0));
                }
            }
            try {
                crc = f.out.finish(fsync);
            } catch (IOException e) {
                throw new MoeportException(f.target + ": cannot finish (" + IoErrors.why(e) + ")", e);
            }
            f.done = true;
        }
        finished.finished(f.target, crc);
    }

    private void write(DataFile file, long position, byte[] bytes) {
        try {
            file.out.write(position, MemorySegment.ofArray(bytes));
        } catch (IOException e) {
            throw writeFailure(file, e);
        }
    }

    private static MoeportException writeFailure(DataFile file, IOException e) {
        return new MoeportException(file.target + ": cannot write (" + IoErrors.why(e) + ")", e);
    }

    @Override
    public synchronized void commit() {
        List<String> incomplete = new ArrayList<>();
        for (TensorPlace p : places.values()) {
            if (!p.chunks.isEmpty() && p.chunks.getFirst().file.out == null) {
                continue; // another part's
            }
            long written = p.chunks.stream().mapToLong(c -> c.crc.recorded()).sum();
            if (written != p.starts[p.chunks.size()]) {
                incomplete.add(p.name + " (" + written + " of " + p.starts[p.chunks.size()] + " bytes)");
            }
        }
        if (!incomplete.isEmpty()) {
            throw new IllegalStateException("tensors not fully written: " + incomplete.subList(0, Math.min(5, incomplete.size())));
        }
        // Files of zero tensor bytes (the common state's only) have had no write to finish them.
        files.forEach(this::finish);
        if (fsync) {
            SafetensorsWriter.syncFolder(dir);
        }
        committed = true;
    }

    /** {@code .metadata} and {@code metadata.json}, then the tracker file last. */
    @Override
    public void writeIndexFiles() {
        try {
            SafetensorsWriter.writeAtomically(dir.resolve(".metadata"), PickleWriter.pickle(metadata()), fsync);
            SafetensorsWriter.writeAtomically(dir.resolve("metadata.json"),
                    "{\"sharded_backend\": \"torch_dist\", \"sharded_backend_version\": 1}".getBytes(StandardCharsets.US_ASCII), fsync);
            if (fsync) {
                SafetensorsWriter.syncFolder(dir);
            }
            SafetensorsWriter.writeAtomically(out.resolve(TorchDistCheckpoint.LATEST), "0".getBytes(StandardCharsets.US_ASCII), fsync);
            if (fsync) {
                SafetensorsWriter.syncFolder(out);
            }
        } catch (IOException e) {
            throw new MoeportException(dir + ": cannot finish output (" + IoErrors.why(e) + ")", e);
        }
    }

    /** PyTorch's {@code Metadata}: every key's dtype, global shape and chunks, and where each chunk is stored. */
    private Object metadata() {
        Map<Object, Object> stateDict = new LinkedHashMap<>();
        Map<Object, Object> storage = new LinkedHashMap<>();
        tensorEntries.forEach((key, chunks) -> {
            List<Object> boxes = new ArrayList<>();
            for (ChunkPlace c : chunks) {
                boxes.add(md("ChunkStorageMetadata", map("offsets", size(c.offsets), "sizes", size(c.sizes))));
                storage.put(md("MetadataIndex", map("fqn", key, "offset", size(c.offsets), "index", null)),
                        storageInfo(c.file, c.zipOffset, c.zip.length()));
            }
            Object properties = new NewObject(new Global(METADATA_MODULE, "TensorProperties"), Tuple.of(
                    new Global("torch", torchDtype(tensorDtypes.get(key))),
                    new Call(new Global("torch.serialization", "_get_layout"), List.of("torch.strided")),
                    false,
                    new Call(new Global(METADATA_MODULE, "_MEM_FORMAT_ENCODING"), List.of(0L)),
                    false));
            stateDict.put(key, md("TensorStorageMetadata", map("properties", properties, "size", size(tensorShapes.get(key)), "chunks", boxes)));
        });
        for (BytesPlace b : bytesEntries) {
            stateDict.put(b.key(), new NewObject(new Global(METADATA_MODULE, "BytesStorageMetadata"), null));
            storage.put(md("MetadataIndex", map("fqn", b.key(), "index", null)), storageInfo(b.file(), b.offset(), b.zip().length()));
        }
        Object storageMeta = md("StorageMeta", map("checkpoint_id", finalDir.toString(), "save_id", "moeport", "load_id", null, "modules", List.of()));
        return md("Metadata", map("state_dict_metadata", stateDict, "planner_data", null, "storage_data", storage,
                "storage_meta", storageMeta, "version", "1.0.0"));
    }

    private static Object storageInfo(DataFile file, long offset, long length) {
        return new NewObject(new Global("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
                map("relative_path", file.name, "offset", offset, "length", length));
    }

    private static String torchDtype(DType dtype) {
        return TorchTypes.DTYPES.entrySet().stream().filter(e -> e.getValue() == dtype).map(Map.Entry::getKey).findFirst().orElseThrow();
    }

    private static NewObject md(String cls, Map<String, Object> state) {
        return new NewObject(new Global(METADATA_MODULE, cls), state);
    }

    private static Call size(long[] dims) {
        return new Call(new Global("torch", "Size"), List.of(longs(dims)));
    }

    private static Map<String, Object> map(Object... kv) {
        Map<String, Object> m = new LinkedHashMap<>();
        for (int i = 0; i < kv.length; i += 2) {
            m.put((String) kv[i], kv[i + 1]);
        }
        return m;
    }

    @Override
    public synchronized void close() {
        if (committed) {
            return;
        }
        for (DataFile f : files) {
            synchronized (f) { // a worker may be finishing it
                if (f.out != null && !f.done) { // not another part's, nor finished (a resumed run reuses those)
                    f.out.abandon();
                }
            }
        }
        try {
            Files.deleteIfExists(dir); // only when empty: an earlier checkpoint's files stay
        } catch (IOException ignored) {
            // Not empty, or gone.
        }
    }
}
