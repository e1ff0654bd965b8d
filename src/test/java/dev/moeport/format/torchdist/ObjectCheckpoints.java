package dev.moeport.format.torchdist;

import dev.moeport.format.torchdist.PickleWriter.Global;
import dev.moeport.format.torchdist.PickleWriter.NewObject;
import java.io.ByteArrayOutputStream;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

/**
 * Builds torch_dist checkpoints that hold only ShardedObjects (bytes entries), as Megatron-Core's
 * {@code dist_checkpointing.save} writes them: each object {@code torch.save}d inside a one-element list
 * (megatron/core/dist_checkpointing/strategies/torch.py, {@code _mcore_to_torch_sharded_object}; the
 * fixtures in fixtures/megatron/ hold {@code [None]} and {@code [{}]}), keyed in {@code .metadata} by a
 * {@code MetadataIndex} without offset and a {@code BytesStorageMetadata}
 * (torch/distributed/checkpoint/metadata.py).
 */
public final class ObjectCheckpoints {
    private static final String DCP = "torch.distributed.checkpoint.metadata";
    private static final String DATA_FILE = "__0_0.distcp";

    private ObjectCheckpoints() {}

    /** A Python tuple, for objects that hold one (Model Optimizer's {@code num_bits = (4, 3)}). */
    public static Object tuple(Object... items) {
        return PickleWriter.Tuple.of(items);
    }

    /** A {@code torch.Size} and a {@code torch.<dtype>} as pickles hold them. */
    public static Object torchSize(long... dims) {
        return new PickleWriter.Call(new Global("torch", "Size"), List.of(new PickleWriter.Tuple(java.util.Arrays.stream(dims).boxed().toList())));
    }

    public static Object torchDtype(String name) {
        return new Global("torch", name);
    }

    /** A tensor of {@code numel} bytes as {@code torch.save} pickles it: Transformer Engine's extra state. */
    public static Object byteTensor(long numel) {
        return new PickleWriter.Call(new Global("torch._utils", "_rebuild_tensor_v2"), List.of(
                new PickleWriter.PersistentId(List.of("storage", new Global("torch", "ByteStorage"), "0", "cpu", numel)),
                0L, PickleWriter.Tuple.of(numel), PickleWriter.Tuple.of(1L), false,
                new PickleWriter.Call(new Global("collections", "OrderedDict"), List.of())));
    }

    /**
     * Writes {@code objects} (key to value: maps, lists, strings, numbers, null, or {@link #byteTensor})
     * as the bytes entries of a torch_dist checkpoint in {@code dir}, plus Megatron's {@code metadata.json}.
     */
    public static Path write(Path dir, Map<String, Object> objects) throws Exception {
        Files.createDirectories(dir);
        ByteArrayOutputStream data = new ByteArrayOutputStream();
        Map<Object, Object> stateDict = new LinkedHashMap<>();
        Map<Object, Object> storage = new LinkedHashMap<>();
        for (Map.Entry<String, Object> e : objects.entrySet()) {
            byte[] zip = TorchSaveZip.object(PickleWriter.pickle(java.util.Collections.singletonList(e.getValue()))).prefix(0);
            stateDict.put(e.getKey(), new NewObject(new Global(DCP, "BytesStorageMetadata"), null));
            storage.put(md("MetadataIndex", map("fqn", e.getKey(), "index", null)),
                    new NewObject(new Global("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
                            map("relative_path", DATA_FILE, "offset", (long) data.size(), "length", (long) zip.length)));
            data.writeBytes(zip);
        }
        Files.write(dir.resolve(DATA_FILE), data.toByteArray());
        Files.write(dir.resolve(".metadata"), PickleWriter.pickle(md("Metadata", map("state_dict_metadata", stateDict,
                "planner_data", null, "storage_data", storage, "version", "1.0.0"))));
        Files.writeString(dir.resolve("metadata.json"), "{\"sharded_backend\": \"torch_dist\", \"sharded_backend_version\": 1}");
        return dir;
    }

    /** Writes {@code value} as an older Megatron's {@code common.pt}: a plain {@code torch.save} of the dict. */
    public static Path writeLegacyCommon(Path dir, Object value) throws Exception {
        Files.createDirectories(dir);
        Files.write(dir.resolve("common.pt"), TorchSaveZip.object(PickleWriter.pickle(value)).prefix(0));
        return dir;
    }

    private static NewObject md(String cls, Map<String, Object> state) {
        return new NewObject(new Global(DCP, cls), state);
    }

    private static Map<String, Object> map(Object... kv) {
        Map<String, Object> m = new LinkedHashMap<>();
        for (int i = 0; i < kv.length; i += 2) {
            m.put((String) kv[i], kv[i + 1]);
        }
        return m;
    }
}
