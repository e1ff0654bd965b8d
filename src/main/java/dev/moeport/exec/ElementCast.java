package dev.moeport.exec;

import dev.moeport.tensor.DType;
import dev.moeport.tensor.FloatFormats;
import java.lang.foreign.MemorySegment;

/** Element-by-element conversion between the floating-point dtypes, rounding to nearest even. */
final class ElementCast {
    private ElementCast() {}

    /** Converts {@code count} elements of {@code src} ({@code from}) into {@code dst} ({@code to}). */
    static void convert(MemorySegment src, DType from, MemorySegment dst, DType to, long count) {
        for (long i = 0; i < count; i++) {
            FloatFormats.write(dst, to, i, FloatFormats.read(src, from, i));
        }
    }
}
