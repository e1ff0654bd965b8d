package dev.moeport.format.torchdist;

import dev.moeport.MoeportException;
import dev.moeport.format.torchdist.Pickle.Call;
import dev.moeport.format.torchdist.Pickle.Dict;
import dev.moeport.format.torchdist.Pickle.Global;
import dev.moeport.format.torchdist.Pickle.PersistentId;
import dev.moeport.format.torchdist.Pickle.Tuple;
import dev.moeport.tensor.DType;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.charset.StandardCharsets;
import java.util.Arrays;
import java.util.HashSet;
import java.util.List;
import java.util.Map;
import java.util.Set;

/**
 * Reads one tensor saved by {@code torch.save}: the zip's {@code <prefix>/data.pkl} rebuilds the
 * tensor with {@code torch._utils._rebuild_tensor_v2} (typed storage) or {@code _v3} (byte storage
 * and a dtype) over a storage that a persistent id names; the storage's bytes are the entry
 * {@code <prefix>/data/<key>}.
 */
final class TorchSave {
    private TorchSave() {}

    private static final String PICKLE = "data.pkl";
    private static final int MAX_RANK = 64;
    private static final Global REBUILD_V2 = new Global("torch._utils", "_rebuild_tensor_v2");
    private static final Global REBUILD_V3 = new Global("torch._utils", "_rebuild_tensor_v3");
    private static final Global ORDERED_DICT = new Global("collections", "OrderedDict");
    private static final Set<Global> ALLOWED = allowed();

    private static Set<Global> allowed() {
        Set<Global> s = new HashSet<>(TorchTypes.dtypeGlobals());
        TorchTypes.TYPED_STORAGES.keySet().forEach(name -> s.add(new Global("torch", name)));
        s.addAll(TorchTypes.UNTYPED_STORAGES);
        s.addAll(List.of(REBUILD_V2, REBUILD_V3, ORDERED_DICT));
        return Set.copyOf(s);
    }

    /** The tensor that the {@code torch.save} zip {@code zip} holds; {@code where} names it in errors. */
    static StoredTensor read(MemorySegment zip, String where) {
        Map<String, MemorySegment> entries = ChunkZip.entries(zip, where);
        String prefix = prefix(entries, where);
        Object root = Pickle.load(entries.get(prefix + PICKLE), where + " " + PICKLE, ALLOWED, true);
        return new Rebuild(where, entries, prefix).tensor(root);
    }

    /**
     * The object that the {@code torch.save} zip {@code zip} holds (a ShardedObject, Megatron's common
     * state), as the pickle machine builds it; a tensor inside stays an unresolved rebuild call.
     * Globals outside the tensor-rebuilding ones and {@code allowed} are refused.
     */
    static Object object(MemorySegment zip, String where, Set<Global> allowed) {
        Map<String, MemorySegment> entries = ChunkZip.entries(zip, where);
        Set<Global> globals = new HashSet<>(ALLOWED);
        globals.addAll(allowed);
        return Pickle.load(entries.get(prefix(entries, where) + PICKLE), where + " " + PICKLE, globals, true);
    }

    /** Whether {@code value} is a tensor as a pickle rebuilds it. */
    static boolean isTensor(Object value) {
        return value instanceof Call(Global callable, Tuple args) && (callable.equals(REBUILD_V2) || callable.equals(REBUILD_V3));
    }

    /** The {@code <prefix>/} of the zip's single {@code <prefix>/data.pkl}, checking its byte order. */
    private static String prefix(Map<String, MemorySegment> entries, String where) {
        String prefix = null;
        for (String name : entries.keySet()) {
            int slash = name.indexOf('/');
            if (slash > 0 && name.substring(slash + 1).equals(PICKLE)) {
                if (prefix != null) {
                    throw fail(where, "holds two pickles, '" + prefix + PICKLE + "' and '" + name + "'");
                }
                prefix = name.substring(0, slash + 1);
            }
        }
        if (prefix == null) {
            throw fail(where, "has no <prefix>/data.pkl entry: not a torch.save zip");
        }
        MemorySegment byteOrder = entries.get(prefix + "byteorder");
        if (byteOrder != null && !new String(byteOrder.toArray(ValueLayout.JAVA_BYTE), StandardCharsets.US_ASCII).equals("little")) {
            throw fail(where, "was saved big-endian; only little-endian tensors are supported");
        }
        return prefix;
    }

    private record Rebuild(String where, Map<String, MemorySegment> entries, String prefix) {

        StoredTensor tensor(Object root) {
            if (!(root instanceof Call(Global callable, Tuple args)) || !(callable.equals(REBUILD_V2) || callable.equals(REBUILD_V3))) {
                throw fail(where, "pickle is not a tensor rebuilt by _rebuild_tensor_v2 or _v3, but " + Pickle.kind(root));
            }
            boolean v3 = callable.equals(REBUILD_V3);
            int required = v3 ? 7 : 6;
            if (args.size() < required || args.size() > required + 1) {
                throw fail(where, callable.name() + " with " + args.size() + " arguments");
            }
            if (!(args.get(4) instanceof Boolean) || !isEmptyOrderedDict(args.get(5))) {
                throw fail(where, "tensor with backward hooks or a malformed requires_grad");
            }
            if (args.size() > required && !(args.get(required) instanceof Dict) && args.get(required) != Pickle.NONE) {
                throw fail(where, "tensor metadata that is not a dict");
            }
            if (!(args.get(0) instanceof PersistentId(Object id)) || !(id instanceof Tuple pid) || pid.size() != 5
                    || !"storage".equals(pid.get(0)) || !(pid.get(1) instanceof Global storageClass)
                    || !(pid.get(2) instanceof String key) || !(pid.get(4) instanceof Long storageNumel)) {
                throw fail(where, "storage reference is not ('storage', <class>, key, location, size)");
            }
            DType storageType = TorchTypes.UNTYPED_STORAGES.contains(storageClass) ? DType.U8
                    : storageClass.module().equals("torch") ? TorchTypes.TYPED_STORAGES.get(storageClass.name()) : null;
            if (storageType == null) {
                throw fail(where, "storage class " + storageClass + " is not a storage");
            }
            DType dtype = v3 ? TorchTypes.dtype(args.get(6)) : storageType;
            if (dtype == null) {
                throw fail(where, "element type " + Pickle.kind(args.get(6)) + " is not supported");
            }
            MemorySegment storage = entries.get(prefix + "data/" + key);
            if (storage == null) {
                throw fail(where, "has no entry '" + prefix + "data/" + key + "' for its storage");
            }
            long width = dtype.byteWidth();
            long storageBytes = storageType.byteSize(storageNumel);
            if (storageBytes != storage.byteSize() || storageBytes % width != 0) {
                throw fail(where, "storage '" + key + "' of " + storageNumel + " " + storageType + " elements does not match its "
                        + storage.byteSize() + " bytes");
            }
            long[] shape = longs(args.get(2), "size");
            long[] strides = longs(args.get(3), "stride");
            if (!(args.get(1) instanceof Long offset) || offset < 0 || strides.length != shape.length) {
                throw fail(where, "tensor view with a negative offset or as many strides as dimensions");
            }
            requireInside(shape, strides, offset, storageBytes / width);
            return new StoredTensor(dtype, shape, strides, offset, storage);
        }

        /**
         * Every element of the view must lie inside the storage, and the view may not hold more
         * elements than the storage (PyTorch's checkpoints never save an expanded view), so that
         * what a chunk claims is bounded by the bytes of the file.
         */
        private void requireInside(long[] shape, long[] strides, long offset, long storageNumel) {
            try {
                long numel = 1;
                long last = offset;
                for (int d = 0; d < shape.length; d++) {
                    numel = Math.multiplyExact(numel, shape[d]);
                    last = Math.addExact(last, Math.multiplyExact(Math.max(shape[d] - 1, 0), strides[d]));
                }
                if (numel == 0 || (numel <= storageNumel && last < storageNumel)) {
                    return;
                }
            } catch (ArithmeticException overflow) {
                // falls through to the error
            }
            throw fail(where, "tensor view " + Arrays.toString(shape) + " with strides " + Arrays.toString(strides) + " at offset "
                    + offset + " does not fit its storage of " + storageNumel + " elements");
        }

        private long[] longs(Object value, String what) {
            if (!(value instanceof Tuple t) || t.size() > MAX_RANK) {
                throw fail(where, "tensor " + what + " is not a tuple of at most " + MAX_RANK + " integers");
            }
            long[] out = new long[t.size()];
            for (int i = 0; i < out.length; i++) {
                if (!(t.get(i) instanceof Long v) || v < 0) {
                    throw fail(where, "tensor " + what + " holds something other than a non-negative integer");
                }
                out[i] = v;
            }
            return out;
        }

        private static boolean isEmptyOrderedDict(Object value) {
            return value instanceof Call(Global callable, Tuple args) && callable.equals(ORDERED_DICT) && args.size() == 0;
        }
    }

    private static MoeportException fail(String where, String message) {
        return new MoeportException(where + ": " + message);
    }
}
