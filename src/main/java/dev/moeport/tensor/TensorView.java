package dev.moeport.tensor;

import dev.moeport.MoeportException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.file.Path;

/**
 * A tensor as it lies in a file: its name, element type, shape and the bytes, a zero-copy slice of a
 * memory-mapped file (row-major, little-endian, possibly unaligned). Narrowing along the outermost
 * dimension (an expert of a stack, a range of rows) stays zero-copy.
 *
 * @param file the file that holds the bytes, for error messages
 */
public record TensorView(String name, DType dtype, Shape shape, MemorySegment data, Path file) implements Tensor {

    public TensorView {
        long expected = dtype.byteSize(shape.numel());
        if (expected != data.byteSize()) {
            throw new IllegalArgumentException(
                    name + ": " + data.byteSize() + " bytes for " + dtype + shape + " (expected " + expected + ")");
        }
    }

    /** An F32 tensor of {@code values} in heap memory: 0-d for a single value, else 1-d. */
    public static TensorView ofFloats(String name, float... values) {
        // A byte[]-backed segment: writers hand segments to FileChannel as ByteBuffers.
        MemorySegment bytes = MemorySegment.ofArray(new byte[values.length * 4]);
        for (int i = 0; i < values.length; i++) {
            bytes.setAtIndex(FloatFormats.FLOAT_LE, i, values[i]);
        }
        return new TensorView(name, DType.F32, values.length == 1 ? Shape.of() : Shape.of(values.length), bytes, null);
    }

    @Override
    public MemorySegment bytes(Arena scratch) {
        return data;
    }

    @Override
    public TensorView narrow(long start, long count, String newName) {
        requireRank(1);
        long outer = shape.dim(0);
        if (start < 0 || count < 0 || start + count > outer) {
            throw new MoeportException(
                    where() + ": range [" + start + ", " + (start + count) + ") out of dimension 0 of size " + outer);
        }
        long stride = dtype.byteSize(shape.innerNumel());
        if (stride < 0) {
            throw new MoeportException(where() + ": rows of " + dtype + " do not end on a byte boundary");
        }
        return new TensorView(newName, dtype, shape.with(0, count), data.asSlice(start * stride, count * stride), file);
    }

    @Override
    public TensorView select(long index, String newName) {
        TensorView one = narrow(index, 1, newName);
        return new TensorView(newName, dtype, shape.dropFirst(), one.data, file);
    }

    @Override
    public String where() {
        return "tensor '" + name + "'" + (file == null ? "" : " in " + file);
    }

    private void requireRank(int min) {
        if (rank() < min) {
            throw new MoeportException(where() + ": expected at least " + min + " dimension(s), got " + describe());
        }
    }
}
