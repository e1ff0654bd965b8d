package dev.moeport.tensor;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;

/**
 * A tensor whose elements are another's plus a constant, computed in float and rounded to the tensor's dtype (BF16, F16
 * or F32) as PyTorch's {@code t + c} rounds: a norm weight between a plain RMSNorm ({@code x * w}) and Megatron-Core's
 * zero-centered one ({@code x * (1 + w')}) differs by one. Narrowing passes through to the source.
 */
public record ShiftedTensor(Tensor source, float delta) implements Tensor {

    public ShiftedTensor {
        if (!FloatFormats.isSupported(source.dtype())) {
            throw new IllegalArgumentException(source.where() + " is " + source.dtype() + "; only BF16, F16 or F32 values can be shifted");
        }
    }

    @Override
    public String name() {
        return source.name();
    }

    @Override
    public DType dtype() {
        return source.dtype();
    }

    @Override
    public Shape shape() {
        return source.shape();
    }

    @Override
    public String where() {
        return source.where();
    }

    @Override
    public long storedBytes() {
        return source.storedBytes();
    }

    @Override
    public String transform() {
        return (delta < 0 ? "subtract " : "add ") + Math.abs(delta);
    }

    @Override
    public Tensor narrow(long start, long count, String newName) {
        return new ShiftedTensor(source.narrow(start, count, newName), delta);
    }

    @Override
    public Tensor select(long index, String newName) {
        return new ShiftedTensor(source.select(index, newName), delta);
    }

    @Override
    public MemorySegment bytes(Arena scratch) {
        MemorySegment in = source.bytes(scratch);
        MemorySegment out = scratch.allocate(byteSize());
        for (long i = 0; i < numel(); i++) {
            FloatFormats.write(out, dtype(), i, FloatFormats.read(in, dtype(), i) + delta);
        }
        return out;
    }
}
