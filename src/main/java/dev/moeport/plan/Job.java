package dev.moeport.plan;

import dev.moeport.quant.QuantFormat;
import dev.moeport.tensor.DType;
import dev.moeport.tensor.Shape;
import java.util.List;

/**
 * One unit of work of a {@link Plan}: the output tensors it writes and the source bytes it reads.
 * Jobs are data; the executor decides how to run them (chunking, threads, page-cache advice).
 */
public sealed interface Job {
    List<OutputTensor> outputs();

    /** The source bytes, in output order (rows of the result, outermost dimension first). */
    List<Piece> pieces();

    /** A short name of the transform, for dry runs: {@code copy}, {@code cast}, {@code quantize nvfp4}, ... */
    String transform();

    /** Bytes read from the input, for progress and throughput. */
    default long inputBytes() {
        return pieces().stream().mapToLong(Piece::inputBytes).sum();
    }

    /** The output tensor's bytes are the pieces' bytes (raw, zeros, or decoded from a quantized weight), concatenated. */
    record Copy(OutputTensor output, List<Piece> pieces, String transform) implements Job {
        @Override
        public List<OutputTensor> outputs() {
            return List.of(output);
        }
    }

    /** The pieces (all of dtype {@code from}, raw or decoded) converted element by element to the output's dtype. */
    record Cast(OutputTensor output, List<Piece> pieces, DType from, String transform) implements Job {
        @Override
        public List<OutputTensor> outputs() {
            return List.of(output);
        }
    }

    /**
     * Quantizes a weight {@code [..., out, in]} assembled from the pieces (dtype {@code sourceType}),
     * first rounded to {@code exportType} when they differ (the format's numerics are defined on the
     * weight in its export dtype).
     *
     * @param amax where the per-tensor scale (fp8, nvfp4) comes from; {@link AmaxSource.None} for the other formats
     * @param inputAmax calibrated activation amax for {@code input_scale}, or null when there is none
     * @param weightScale2 the {@code weight_scale_2} output (nvfp4), else null
     * @param inputScale the {@code input_scale} output, else null
     */
    record Quantize(QuantFormat format, Shape weightShape, DType sourceType, DType exportType, List<Piece> pieces,
                    AmaxSource amax, Float inputAmax,
                    OutputTensor weight, OutputTensor weightScale, OutputTensor weightScale2, OutputTensor inputScale,
                    boolean reciprocalTensorScales)
            implements Job {
        @Override
        public List<OutputTensor> outputs() {
            return java.util.stream.Stream.of(weight, weightScale, weightScale2, inputScale).filter(java.util.Objects::nonNull).toList();
        }

        @Override
        public String transform() {
            return "quantize " + format.cliName() + (amax instanceof AmaxSource.Shared ? ", shared amax" : "");
        }
    }

    /**
     * Deterministic pseudo-random values for synthetic checkpoints, uniform in {@code [low, high)}. The
     * tensor is cut along its outermost dimension into as many equal blocks as there are seeds; element
     * j of block b is a function of {@code (seeds[b], j)} alone, so any chunking gives the same bytes,
     * and a stack of experts holds the same values as the experts stored one by one.
     */
    record Synthesize(OutputTensor output, List<Long> seeds, float low, float high) implements Job {
        @Override
        public List<OutputTensor> outputs() {
            return List.of(output);
        }

        @Override
        public List<Piece> pieces() {
            return List.of();
        }

        @Override
        public String transform() {
            return "synthesize";
        }

        /** The bytes it writes: synthesis reads nothing, and progress counts the work. */
        @Override
        public long inputBytes() {
            return output.byteSize();
        }
    }
}
