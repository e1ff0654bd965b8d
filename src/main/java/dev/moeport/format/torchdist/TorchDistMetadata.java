package dev.moeport.format.torchdist;

import dev.moeport.MoeportException;
import dev.moeport.format.torchdist.Pickle.Call;
import dev.moeport.format.torchdist.Pickle.Dict;
import dev.moeport.format.torchdist.Pickle.Global;
import dev.moeport.format.torchdist.Pickle.Instance;
import dev.moeport.format.torchdist.Pickle.PyList;
import dev.moeport.format.torchdist.Pickle.Tuple;
import dev.moeport.tensor.DType;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.SequencedMap;
import java.util.Set;

/**
 * The {@code .metadata} of a torch_dist checkpoint: PyTorch's {@code Metadata} (or Megatron's
 * {@code MCoreMetadata}), decoded from its pickle into plain records. Fields that moeport does not
 * need (planner data, storage meta, Megatron's own data) are parsed, so that their globals are
 * checked too, and then dropped.
 *
 * @param entries every key of the state dict, in the pickle's order
 * @param storage where each tensor chunk and each bytes entry lies
 */
record TorchDistMetadata(SequencedMap<String, Entry> entries, Map<ChunkKey, StorageInfo> storage) {

    sealed interface Entry permits TensorEntry, BytesEntry {}

    /** A tensor: element type, global shape and the chunks it was saved in. */
    record TensorEntry(DType dtype, long[] size, List<Box> chunks) implements Entry {}

    /** A pickled Python object or raw bytes (Megatron's ShardedObjects, rng state). */
    record BytesEntry() implements Entry {}

    /** A chunk of a tensor: where it starts in the global tensor and its extent in each dimension. */
    record Box(long[] offsets, long[] sizes) {}

    /** Key of {@link #storage}: a state-dict key and, for a tensor chunk, its offsets (null for bytes). */
    record ChunkKey(String fqn, List<Long> offsets) {}

    /** A byte range of a data file, relative to the checkpoint folder. */
    record StorageInfo(String relativePath, long offset, long length, boolean transformed) {}

    private static final String DCP = "torch.distributed.checkpoint.metadata";

    private static final Set<Global> ALLOWED = allowed();

    private static Set<Global> allowed() {
        Set<Global> s = new HashSet<>(TorchTypes.dtypeGlobals());
        for (String name : List.of("Metadata", "TensorStorageMetadata", "BytesStorageMetadata", "ChunkStorageMetadata",
                "TensorProperties", "MetadataIndex", "StorageMeta", "_MEM_FORMAT_ENCODING")) {
            s.add(new Global(DCP, name));
        }
        // Megatron-Core keeps every rank's save plan in the metadata (all_local_plans, state_dict_saver.py) when it
        // plans the save decentralized, as it did with PyTorch 2.13; parsed like the rest, then dropped.
        for (String name : List.of("SavePlan", "WriteItem", "WriteItemType", "TensorWriteData")) {
            s.add(new Global("torch.distributed.checkpoint.planner", name));
        }
        s.add(new Global("megatron.core.dist_checkpointing.strategies.torch", "MCoreMetadata"));
        s.add(new Global("torch.distributed.checkpoint.filesystem", "_StorageInfo"));
        s.add(new Global("torch", "Size"));
        s.add(new Global("torch.serialization", "_get_layout"));
        s.add(new Global("collections", "OrderedDict"));
        s.add(new Global("pathlib", "PosixPath"));
        s.add(new Global("pathlib._local", "PosixPath"));
        return Set.copyOf(s);
    }

    /** Decodes the {@code .metadata} pickle in {@code data}; {@code where} names the file. */
    static TorchDistMetadata parse(MemorySegment data, String where) {
        return new Decoder(where).metadata(Pickle.load(data, where, ALLOWED, false));
    }

    private record Decoder(String where) {

        TorchDistMetadata metadata(Object root) {
            Dict fields = state(root, "Metadata", "MCoreMetadata");
            Dict stateDict = field(fields, "state_dict_metadata", Dict.class, "Metadata");
            SequencedMap<String, Entry> entries = new LinkedHashMap<>();
            for (int i = 0; i < stateDict.keys().size(); i++) {
                String fqn = as(stateDict.keys().get(i), String.class, "a state_dict_metadata key");
                if (entries.putIfAbsent(fqn, entry(fqn, stateDict.values().get(i))) != null) {
                    throw fail("state_dict_metadata lists '" + fqn + "' twice");
                }
            }
            Dict storageData = field(fields, "storage_data", Dict.class, "Metadata");
            Map<ChunkKey, StorageInfo> storage = new HashMap<>();
            for (int i = 0; i < storageData.keys().size(); i++) {
                ChunkKey key = index(storageData.keys().get(i));
                if (storage.putIfAbsent(key, storageInfo(key, storageData.values().get(i))) != null) {
                    throw fail("storage_data lists chunk " + describe(key) + " twice");
                }
            }
            return new TorchDistMetadata(entries, storage);
        }

        private Entry entry(String fqn, Object value) {
            if (value instanceof Instance i && i.type.equals(new Global(DCP, "BytesStorageMetadata"))) {
                return new BytesEntry();
            }
            Dict fields = state(value, "TensorStorageMetadata");
            String what = "tensor '" + fqn + "'";
            DType dtype = properties(field(fields, "properties", Instance.class, what), what);
            long[] size = size(field(fields, "size", Object.class, what), what + " size");
            List<Box> chunks = new ArrayList<>();
            for (Object chunk : field(fields, "chunks", PyList.class, what).items()) {
                Dict c = state(chunk, "ChunkStorageMetadata");
                chunks.add(new Box(size(field(c, "offsets", Object.class, what), what + " chunk offsets"),
                        size(field(c, "sizes", Object.class, what), what + " chunk sizes")));
            }
            return new TensorEntry(dtype, size, chunks);
        }

        /** TensorProperties: its state is a tuple {@code (dtype, layout, ...)} or, from older PyTorch, a dict. */
        private DType properties(Instance properties, String what) {
            if (!properties.type.equals(new Global(DCP, "TensorProperties"))) {
                throw fail(what + ": properties are a " + properties.type + ", not TensorProperties");
            }
            Object dtype = switch (properties.state) {
                case Tuple t when t.size() > 0 -> t.get(0);
                case Dict d -> d.get("dtype");
                case null, default -> throw fail(what + ": TensorProperties without a dtype");
            };
            DType type = TorchTypes.dtype(dtype);
            if (type == null) {
                throw fail(what + ": element type " + Pickle.kind(dtype) + " is not supported");
            }
            return type;
        }

        private ChunkKey index(Object value) {
            Dict fields = state(value, "MetadataIndex");
            String fqn = field(fields, "fqn", String.class, "MetadataIndex");
            Object offset = fields.get("offset");
            if (offset == null || offset == Pickle.NONE) {
                return new ChunkKey(fqn, null);
            }
            return new ChunkKey(fqn, Arrays.stream(size(offset, "MetadataIndex of '" + fqn + "'")).boxed().toList());
        }

        private StorageInfo storageInfo(ChunkKey key, Object value) {
            Dict fields = state(value, "_StorageInfo");
            String what = "storage of " + describe(key);
            String path = field(fields, "relative_path", String.class, what);
            long offset = field(fields, "offset", Long.class, what);
            long length = field(fields, "length", Long.class, what);
            if (offset < 0 || length < 0) {
                throw fail(what + ": negative offset or length");
            }
            Object transforms = fields.get("transform_descriptors");
            boolean transformed = transforms instanceof PyList list ? !list.items().isEmpty()
                    : transforms != null && transforms != Pickle.NONE;
            return new StorageInfo(path, offset, length, transformed);
        }

        /** A {@code torch.Size}: REDUCE of torch.Size over a tuple of non-negative ints. */
        private long[] size(Object value, String what) {
            if (!(value instanceof Call(Global callable, Tuple args)) || !callable.equals(new Global("torch", "Size"))
                    || args.size() != 1 || !(args.get(0) instanceof Tuple dims)) {
                throw fail(what + " is not a torch.Size");
            }
            long[] size = new long[dims.size()];
            for (int i = 0; i < size.length; i++) {
                if (!(dims.get(i) instanceof Long d) || d < 0) {
                    throw fail(what + " holds something other than a non-negative integer");
                }
                size[i] = d;
            }
            return size;
        }

        /** The state dict of a NEWOBJ of {@code torch.distributed.checkpoint} class {@code names[i]}. */
        private Dict state(Object value, String... names) {
            if (value instanceof Instance i && i.state instanceof Dict d && Arrays.asList(names).contains(i.type.name())) {
                return d;
            }
            throw fail("expected a " + String.join(" or ", names) + ", found "
                    + (value instanceof Instance i ? "a " + i.type + " without its fields" : Pickle.kind(value)));
        }

        private <T> T field(Dict fields, String name, Class<T> type, String what) {
            return as(fields.get(name), type, what + " field '" + name + "'");
        }

        private <T> T as(Object value, Class<T> type, String what) {
            if (type.isInstance(value)) {
                return type.cast(value);
            }
            throw fail(what + " is " + (value == null ? "missing" : Pickle.kind(value)));
        }

        private MoeportException fail(String message) {
            return new MoeportException(where + ": " + message);
        }
    }

    static String describe(ChunkKey key) {
        return "'" + key.fqn() + "'" + (key.offsets() == null ? "" : " at " + key.offsets());
    }
}
