package dev.moeport.format.torchdist;

import static java.util.Map.entry;

import dev.moeport.format.torchdist.Pickle.Global;
import dev.moeport.tensor.DType;
import java.util.Map;
import java.util.Set;
import java.util.stream.Collectors;

/** PyTorch's element types and storage classes, as pickles name them, and their moeport {@link DType}. */
final class TorchTypes {
    private TorchTypes() {}

    /** {@code torch.<name>} dtype globals. */
    static final Map<String, DType> DTYPES = Map.ofEntries(
            entry("float64", DType.F64),
            entry("float32", DType.F32),
            entry("float16", DType.F16),
            entry("bfloat16", DType.BF16),
            entry("complex64", DType.C64),
            entry("int64", DType.I64),
            entry("int32", DType.I32),
            entry("int16", DType.I16),
            entry("int8", DType.I8),
            entry("uint64", DType.U64),
            entry("uint32", DType.U32),
            entry("uint16", DType.U16),
            entry("uint8", DType.U8),
            entry("bool", DType.BOOL),
            entry("float8_e4m3fn", DType.F8_E4M3),
            entry("float8_e5m2", DType.F8_E5M2),
            entry("float8_e4m3fnuz", DType.F8_E4M3FNUZ),
            entry("float8_e5m2fnuz", DType.F8_E5M2FNUZ),
            entry("float8_e8m0fnu", DType.F8_E8M0));

    /** {@code torch.<name>Storage} typed storage globals of {@code _rebuild_tensor_v2}. */
    static final Map<String, DType> TYPED_STORAGES = Map.ofEntries(
            entry("DoubleStorage", DType.F64),
            entry("FloatStorage", DType.F32),
            entry("HalfStorage", DType.F16),
            entry("BFloat16Storage", DType.BF16),
            entry("ComplexFloatStorage", DType.C64),
            entry("LongStorage", DType.I64),
            entry("IntStorage", DType.I32),
            entry("ShortStorage", DType.I16),
            entry("CharStorage", DType.I8),
            entry("ByteStorage", DType.U8),
            entry("BoolStorage", DType.BOOL));

    /** The byte storage of {@code _rebuild_tensor_v3}, whose sizes count bytes. */
    static final Set<Global> UNTYPED_STORAGES = Set.of(new Global("torch.storage", "UntypedStorage"), new Global("torch", "UntypedStorage"));

    static Set<Global> dtypeGlobals() {
        return DTYPES.keySet().stream().map(name -> new Global("torch", name)).collect(Collectors.toUnmodifiableSet());
    }

    /** The dtype a {@code torch.<name>} global names, or null. */
    static DType dtype(Object value) {
        return value instanceof Global(String module, String name) && module.equals("torch") ? DTYPES.get(name) : null;
    }
}
