package dev.moeport.quant;

import dev.moeport.tensor.DType;
import java.lang.foreign.MemorySegment;

/**
 * The arithmetic of every {@link QuantFormat}, bit-exact with NVIDIA Model Optimizer (the golden files
 * in {@code shared/golden/quant}). Two implementations: {@code ScalarQuantKernel}, the plain reference,
 * and {@code PanamaQuantKernel} (Vector API); {@link QuantKernels#get()} picks one at start-up.
 *
 * <p>Inputs are row-major BF16, F16 or F32 elements, little-endian and possibly unaligned (slices of
 * mapped safetensors files). Callers hand rows in chunks: a chunk is a multiple of
 * {@link QuantFormat#rowGranularity()} rows except the last of a tensor. Outputs go to the given
 * segments, which are exactly as large as the chunk's share of the output tensors.
 *
 * <p>A NaN or infinite input element is refused with {@link NonFiniteValueException}: quantizing it
 * would silently produce garbage scales for its whole block or tensor.
 */
public interface QuantKernel {

    /** A short name for logs and benchmarks: {@code scalar} or {@code panama}. */
    String name();

    /** What runs, for {@code moeport --version}: the instruction set or vector width. */
    default String description() {
        return name();
    }

    /**
     * The largest |x| of {@code count} elements of {@code src}, as f32 (BF16 and F16 convert exactly).
     *
     * @throws NonFiniteValueException at the first NaN or infinite element
     */
    float amax(MemorySegment src, DType dtype, long count);

    /**
     * Quantizes {@code rows} rows of {@code cols} elements.
     *
     * @param tensorScale fp8: {@code weight_scale}; nvfp4: {@code weight_scale_2}; other formats: ignored
     * @param weight receives {@code format.weightShape([rows, cols])} elements of {@code format.weightType()}
     * @param scale receives {@code format.scaleShape([rows, cols])} elements of {@code format.scaleType()};
     *     unused for fp8, whose only scale is {@code tensorScale}
     * @throws NonFiniteValueException at the first NaN or infinite element
     */
    void quantize(QuantFormat format, MemorySegment src, DType dtype, long rows, long cols, float tensorScale,
                  MemorySegment weight, MemorySegment scale);

    /**
     * The inverse: {@code rows x cols} elements of {@code outType} (BF16 or F32) from a quantized
     * chunk laid out as {@link #quantize} writes it. Supported for fp8, nvfp4, mxfp4 and mxfp8.
     */
    void dequantize(QuantFormat format, MemorySegment weight, MemorySegment scale, float tensorScale,
                    long rows, long cols, DType outType, MemorySegment dst);
}
