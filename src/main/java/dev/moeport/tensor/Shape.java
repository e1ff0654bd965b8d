package dev.moeport.tensor;

import java.util.Arrays;
import java.util.stream.Collectors;

/** The dimensions of a tensor, outermost first. Immutable; a 0-d (scalar) shape has no dimensions. */
public final class Shape {
    private final long[] dims;

    private Shape(long[] dims) {
        this.dims = dims;
    }

    public static Shape of(long... dims) {
        for (long d : dims) {
            if (d < 0) {
                throw new IllegalArgumentException("negative dimension in " + Arrays.toString(dims));
            }
        }
        return new Shape(dims.clone());
    }

    public int rank() {
        return dims.length;
    }

    public long dim(int i) {
        return dims[i < 0 ? dims.length + i : i];
    }

    public long[] toArray() {
        return dims.clone();
    }

    /** The number of elements, or -1 when it overflows a long. */
    public long numel() {
        long n = 1;
        for (long d : dims) {
            if (d != 0 && n > Long.MAX_VALUE / d) {
                return -1;
            }
            n *= d;
        }
        return n;
    }

    /** Elements in one entry of the outermost dimension (the product of the others). */
    public long innerNumel() {
        return rank() == 0 ? 1 : dropFirst().numel();
    }

    /** This shape without its outermost dimension, e.g. one expert of an {@code [E, out, in]} stack. */
    public Shape dropFirst() {
        return new Shape(Arrays.copyOfRange(dims, 1, dims.length));
    }

    /** This shape without its innermost dimension. */
    public Shape dropLast() {
        return new Shape(Arrays.copyOf(dims, dims.length - 1));
    }

    /** This shape with dimension {@code i} replaced. */
    public Shape with(int i, long size) {
        long[] copy = dims.clone();
        copy[i < 0 ? dims.length + i : i] = size;
        return of(copy);
    }

    /** The shape with {@code size} prepended as a new outermost dimension. */
    public Shape prepend(long size) {
        long[] copy = new long[dims.length + 1];
        copy[0] = size;
        System.arraycopy(dims, 0, copy, 1, dims.length);
        return of(copy);
    }

    /** The shape with {@code size} appended as a new innermost dimension ({@code [out]} as the column {@code [out, 1]}). */
    public Shape append(long size) {
        long[] copy = Arrays.copyOf(dims, dims.length + 1);
        copy[dims.length] = size;
        return of(copy);
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof Shape other && Arrays.equals(dims, other.dims);
    }

    @Override
    public int hashCode() {
        return Arrays.hashCode(dims);
    }

    /** Python-like text: {@code [128, 256]}. */
    @Override
    public String toString() {
        return Arrays.stream(dims).mapToObj(Long::toString).collect(Collectors.joining(", ", "[", "]"));
    }
}
