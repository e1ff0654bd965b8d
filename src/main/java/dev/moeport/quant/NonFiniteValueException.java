package dev.moeport.quant;

/** A NaN or infinite element in a tensor to quantize; the caller turns it into an error naming the tensor. */
public final class NonFiniteValueException extends RuntimeException {
    private final long index;

    /** @param index the element's position in the chunk the kernel was given */
    public NonFiniteValueException(long index) {
        super("non-finite value at element " + index, null, false, false);
        this.index = index;
    }

    public long index() {
        return index;
    }
}
