package dev.moeport.quant;

import dev.moeport.tensor.DType;
import java.lang.foreign.MemorySegment;

/** Placeholder until the kernels land (branch quant). */
final class ScalarQuantKernel implements QuantKernel {
    @Override
    public String name() {
        return "scalar";
    }

    @Override
    public float amax(MemorySegment src, DType dtype, long count) {
        throw new UnsupportedOperationException("kernels not merged yet");
    }

    @Override
    public void quantize(QuantFormat format, MemorySegment src, DType dtype, long rows, long cols, float tensorScale,
                         MemorySegment weight, MemorySegment scale) {
        throw new UnsupportedOperationException("kernels not merged yet");
    }

    @Override
    public void dequantize(QuantFormat format, MemorySegment weight, MemorySegment scale, float tensorScale,
                           long rows, long cols, DType outType, MemorySegment dst) {
        throw new UnsupportedOperationException("kernels not merged yet");
    }
}
