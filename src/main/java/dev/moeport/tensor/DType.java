package dev.moeport.tensor;

import java.util.Arrays;
import java.util.Map;
import java.util.function.Function;
import java.util.stream.Collectors;

/**
 * The element types of the safetensors format, under the names its headers use, with their width in
 * bits. Sub-byte types (F4, F6_*) are packed: a tensor of them must end on a byte boundary.
 */
public enum DType {
    BOOL(8),
    F4(4),
    F6_E2M3(6),
    F6_E3M2(6),
    U8(8),
    I8(8),
    F8_E5M2(8),
    F8_E4M3(8),
    F8_E8M0(8),
    F8_E4M3FNUZ(8),
    F8_E5M2FNUZ(8),
    I16(16),
    U16(16),
    F16(16),
    BF16(16),
    I32(32),
    U32(32),
    F32(32),
    C64(64),
    F64(64),
    I64(64),
    U64(64);

    private static final Map<String, DType> BY_NAME =
            Arrays.stream(values()).collect(Collectors.toUnmodifiableMap(DType::name, Function.identity()));

    private final int bits;

    DType(int bits) {
        this.bits = bits;
    }

    public int bits() {
        return bits;
    }

    /** Bytes one element takes; only for types of whole bytes. */
    public int byteWidth() {
        if (bits % 8 != 0) {
            throw new IllegalStateException(this + " has no whole-byte element size");
        }
        return bits / 8;
    }

    /**
     * Bytes that {@code numel} elements take, or -1 when they do not end on a byte boundary (possible
     * only for sub-byte types) or the size overflows a long.
     */
    public long byteSize(long numel) {
        if (numel < 0 || numel > Long.MAX_VALUE / bits) {
            return -1;
        }
        long totalBits = numel * bits;
        return totalBits % 8 == 0 ? totalBits / 8 : -1;
    }

    /** The type of this name in a safetensors header, or null when there is none. */
    public static DType fromName(String name) {
        return BY_NAME.get(name);
    }
}
