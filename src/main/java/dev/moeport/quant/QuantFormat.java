package dev.moeport.quant;

import dev.moeport.tensor.DType;
import dev.moeport.tensor.Shape;
import java.util.Arrays;
import java.util.Locale;

/**
 * The quantization formats of {@code shared/spec/QUANT_FORMATS.md}: what each produces from a weight
 * {@code [..., out, in]}. Pure description; the arithmetic is in {@link QuantKernel}.
 */
public enum QuantFormat {
    /** FP8 E4M3, one f32 scale per tensor (per expert for a 3-D stack). */
    FP8("fp8", DType.F8_E4M3, DType.F32, 0, 1),
    /** FP8 E4M3, one f32 scale per output channel. */
    FP8_PC("fp8_pc", DType.F8_E4M3, DType.F32, 0, 1),
    /** FP8 E4M3, one scale per 128 x 128 block (bf16-exact values stored as f32), weight only. */
    FP8_PB("fp8_pb", DType.F8_E4M3, DType.F32, 128, 128),
    /** E2M1 pairs packed in bytes, E4M3 scale per 16 elements of a row, plus an f32 global scale. */
    NVFP4("nvfp4", DType.U8, DType.F8_E4M3, 16, 1),
    /** E2M1 pairs packed in bytes, E8M0 scale byte per 32 elements of a row. */
    MXFP4("mxfp4", DType.U8, DType.U8, 32, 1),
    /** FP8 E4M3 elements, E8M0 scale byte per 32 elements of a row. */
    MXFP8("mxfp8", DType.F8_E4M3, DType.U8, 32, 1),
    /** INT8, one f32 scale per output row, weight only. */
    INT8_WO("int8_wo", DType.I8, DType.F32, 0, 1),
    /** INT4 nibbles packed along the output dimension, one f32 scale per 128 elements of a row, weight only. */
    INT4_G128("int4_g128", DType.U8, DType.F32, 128, 2);

    private final String cliName;
    private final DType weightType;
    private final DType scaleType;
    private final int blockSize;
    private final int rowGranularity;

    QuantFormat(String cliName, DType weightType, DType scaleType, int blockSize, int rowGranularity) {
        this.cliName = cliName;
        this.weightType = weightType;
        this.scaleType = scaleType;
        this.blockSize = blockSize;
        this.rowGranularity = rowGranularity;
    }

    /** The name on the command line ({@code --format nvfp4}). */
    public String cliName() {
        return cliName;
    }

    public static QuantFormat fromCliName(String name) {
        for (QuantFormat f : values()) {
            if (f.cliName.equals(name.toLowerCase(Locale.ROOT))) {
                return f;
            }
        }
        throw new IllegalArgumentException("unknown format '" + name + "' (choose from "
                + String.join(", ", Arrays.stream(values()).map(QuantFormat::cliName).toList()) + ")");
    }

    public DType weightType() {
        return weightType;
    }

    public DType scaleType() {
        return scaleType;
    }

    /** Elements of a row that share one scale (0: the whole row or tensor). */
    public int blockSize() {
        return blockSize;
    }

    /**
     * Rows that must be quantized together: 128 for the 128 x 128 blocks of fp8_pb, 2 for int4_g128
     * (two rows share each byte). A chunk of rows given to a kernel is a multiple of this, except the
     * last chunk of a tensor.
     */
    public int rowGranularity() {
        return rowGranularity;
    }

    /** Whether the kernel divides by a scale computed from the amax of the whole tensor (fp8, nvfp4). */
    public boolean usesTensorAmax() {
        return this == FP8 || this == NVFP4;
    }

    /**
     * Whether the format quantizes activations with a static per-tensor scale ({@code input_scale},
     * from a calibrated input amax): fp8 and nvfp4. The others are weight-only or scale activations
     * dynamically.
     */
    public boolean quantizesActivations() {
        return this == FP8 || this == NVFP4;
    }

    /** Whether the format has a separate global scale output, {@code weight_scale_2} (nvfp4). */
    public boolean hasScale2() {
        return this == NVFP4;
    }

    /**
     * The per-tensor scale from the tensor's amax: fp8's {@code weight_scale} (amax / 448) and nvfp4's
     * {@code weight_scale_2} (amax / (6 * 448)), both as f32 divisions. Also the {@code input_scale} from
     * a calibrated input amax, for every format that has one. An amax of 0 (an all-zero tensor) gives 1:
     * every code is zero whatever the scale, and a zero scale would divide by zero.
     */
    public float tensorScale(float amax) {
        if (amax == 0) {
            return 1f;
        }
        return this == NVFP4 ? amax / (6.0f * 448.0f) : amax / 448.0f;
    }

    /** The shape of the quantized weight of a {@code [..., out, in]} weight. */
    public Shape weightShape(Shape w) {
        long out = w.dim(-2);
        long in = w.dim(-1);
        return switch (this) {
            case NVFP4, MXFP4 -> w.with(-1, paddedIn(in) / 2);
            case INT4_G128 -> w.with(-2, out / 2);
            default -> w;
        };
    }

    /** The shape of {@code weight_scale}. fp8 has one per tensor (a 0-d tensor), or one per expert of a stack. */
    public Shape scaleShape(Shape w) {
        long out = w.dim(-2);
        long in = w.dim(-1);
        return switch (this) {
            case FP8 -> w.dropLast().dropLast();
            case FP8_PC, INT8_WO -> w.dropLast();
            case FP8_PB -> w.with(-2, ceilDiv(out, 128)).with(-1, ceilDiv(in, 128));
            case NVFP4, MXFP4, MXFP8, INT4_G128 -> w.with(-1, paddedIn(in) / blockSize);
        };
    }

    /** Columns of the matrix a quantized weight with {@code packedColumns} columns decodes to (two E2M1 codes a byte). */
    public long unpackedColumns(long packedColumns) {
        return this == NVFP4 || this == MXFP4 ? packedColumns * 2 : packedColumns;
    }

    /** {@code in} rounded up to a whole number of blocks. */
    public long paddedIn(long in) {
        return blockSize == 0 ? in : ceilDiv(in, blockSize) * blockSize;
    }

    private static long ceilDiv(long a, long b) {
        return (a + b - 1) / b;
    }
}
