package dev.moeport.quant;

import dev.moeport.tensor.DType;
import dev.moeport.tensor.FloatFormats;
import dev.moeport.tensor.Shape;
import java.util.Arrays;
import java.util.Locale;
import java.util.Map;
import java.util.Objects;

/**
 * The quantization formats of {@code shared/spec/QUANT_FORMATS.md}: everything a format is, in one place.
 * Each constant states its stored dtypes, its element range, its blocks, how its elements pack into bytes,
 * where its scales come from (and so which scales it writes, whether fused siblings share its per-tensor
 * scale, and whether it carries a static input scale), and the names Model Optimizer gives it. Adding a format is
 * one constant here; the compiler then lists the switches that must learn it (the two kernels'
 * arithmetic, {@link #scaleShape}, decoding in {@link DequantizedTensor}). The arithmetic itself is in
 * {@link QuantKernel}.
 */
public enum QuantFormat {
    /** FP8 E4M3, one f32 scale per tensor (per expert for a 3-D stack). */
    FP8("fp8", DType.F8_E4M3, FloatFormats.E4M3_MAX, DType.F32, 0, 1, Packing.NONE, Scaling.TENSOR, new Modelopt("FP8", 0, false, Quantizer.perTensor("e4m3"))),
    /** FP8 E4M3, one f32 scale per output channel. */
    FP8_PC("fp8_pc", DType.F8_E4M3, FloatFormats.E4M3_MAX, DType.F32, 0, 1, Packing.NONE, Scaling.LOCAL,
            new Modelopt("FP8_PER_CHANNEL_PER_TOKEN", 0, false, Quantizer.perChannel("e4m3"))),
    /** FP8 E4M3, one scale per 128 x 128 block (bf16-exact values stored as f32), weight only. */
    FP8_PB("fp8_pb", DType.F8_E4M3, FloatFormats.E4M3_MAX, DType.F32, 128, 128, Packing.NONE, Scaling.LOCAL, new Modelopt("fp8_pb_wo", 0, false, Quantizer.blocks("e4m3", 128, 128, null))),
    /** E2M1 pairs packed in bytes, E4M3 scale per 16 elements of a row, plus an f32 global scale. */
    NVFP4("nvfp4", DType.U8, FloatFormats.E2M1_MAX, DType.F8_E4M3, 16, 1, Packing.COLUMN_PAIRS, Scaling.BLOCKS_UNDER_TENSOR,
            new Modelopt("NVFP4", 16, false, Quantizer.blocks("e2m1", 16, 0, "e4m3"))),
    /** E2M1 pairs packed in bytes, E8M0 scale byte per 32 elements of a row. */
    MXFP4("mxfp4", DType.U8, FloatFormats.E2M1_MAX, DType.U8, 32, 1, Packing.COLUMN_PAIRS, Scaling.LOCAL, new Modelopt("mxfp4", 0, false, Quantizer.blocks("e2m1", 32, 0, "e8m0"))),
    /** FP8 E4M3 elements, E8M0 scale byte per 32 elements of a row. */
    MXFP8("mxfp8", DType.F8_E4M3, FloatFormats.E4M3_MAX, DType.U8, 32, 1, Packing.NONE, Scaling.LOCAL, new Modelopt("MXFP8", 32, false, Quantizer.blocks("e4m3", 32, 0, "e8m0"))),
    /** INT8, one f32 scale per output row, weight only. */
    INT8_WO("int8_wo", DType.I8, QuantMath.INT8_MAX, DType.F32, 0, 1, Packing.NONE, Scaling.LOCAL, new Modelopt("W8A16", 0, false, Quantizer.perChannel("8"))),
    /** INT4 nibbles packed along the output dimension, one f32 scale per 128 elements of a row, weight only. */
    INT4_G128("int4_g128", DType.U8, QuantMath.INT4_MAX, DType.F32, 128, 2, Packing.ROW_PAIRS, Scaling.LOCAL, new Modelopt("W4A16_AWQ", 128, true, Quantizer.blocks("4", 128, 0, null)));

    /** How a format's element codes sit in the bytes of its weight. */
    public enum Packing {
        /** One code a byte. */
        NONE,
        /** Two 4-bit codes a byte, neighbours in a row (low nibble first): the weight has half the columns. */
        COLUMN_PAIRS,
        /** Two 4-bit codes a byte, from rows 2k and 2k+1 (low nibble from the even row): the weight has half the rows. */
        ROW_PAIRS
    }

    /** Where a format's scales come from. */
    public enum Scaling {
        /** One scale for the whole tensor (each expert of a stack), from its amax: {@code weight_scale} is that scale. */
        TENSOR,
        /** Scales per block from the block's amax, under one global scale from the tensor's amax, {@code weight_scale_2}. */
        BLOCKS_UNDER_TENSOR,
        /** Scales per row or block from that row's or block's own amax, all computed by the kernel. */
        LOCAL
    }

    /**
     * How Model Optimizer names the format in {@code hf_quant_config.json} and {@code config.json}
     * (modelopt/torch/export/quant_utils.py, the per-layer {@code quant_algo} table).
     *
     * @param quantAlgo {@code quant_algo}, with its exact casing
     * @param groupSize the {@code group_size} it records, or 0 when it records none
     * @param awq whether it records AWQ's {@code has_zero_point} and {@code pre_quant_scale} (moeport writes no zero points and no pre-quant scales)
     * @param quantizer the weight quantizer's attributes in a Megatron-Core checkpoint's {@code modelopt_state}
     */
    public record Modelopt(String quantAlgo, int groupSize, boolean awq, Quantizer quantizer) {}

    /**
     * A Model Optimizer weight quantizer's attributes, after its presets (modelopt_recipes/configs/numerics/*.yaml):
     * {@code num_bits} as {@code e4m3}/{@code e2m1} or an integer width, and either {@code axis} (None per tensor, 0
     * per output channel) or {@code block_sizes} (the last dimension's block, the second last's or 0 for none, and
     * the scales' {@code scale_bits}, or null where the preset leaves it open).
     */
    public record Quantizer(String numBits, Long axis, long lastBlock, long secondLastBlock, String scaleBits) {
        static Quantizer perTensor(String numBits) {
            return new Quantizer(numBits, null, 0, 0, null);
        }

        static Quantizer perChannel(String numBits) {
            return new Quantizer(numBits, 0L, 0, 0, null);
        }

        static Quantizer blocks(String numBits, long lastBlock, long secondLastBlock, String scaleBits) {
            return new Quantizer(numBits, null, lastBlock, secondLastBlock, scaleBits);
        }

        /**
         * Whether attributes read from a checkpoint are these: {@code blockSizes} null when there are none, its
         * keys -1, -2 and {@code scale_bits} (as {@code e4m3}).
         */
        public boolean matches(String numBits, Object axis, Map<?, ?> blockSizes, String scaleBits) {
            if (!this.numBits.equals(numBits)) {
                return false;
            }
            if (lastBlock == 0) {
                return blockSizes == null && Objects.equals(this.axis, axis);
            }
            return blockSizes != null && Long.valueOf(lastBlock).equals(blockSizes.get(-1L))
                    && Objects.equals(secondLastBlock == 0 ? null : secondLastBlock, blockSizes.get(-2L))
                    && (this.scaleBits == null || this.scaleBits.equals(scaleBits));
        }
    }

    private final String cliName;
    private final DType weightType;
    private final float elementMax;
    private final DType scaleType;
    private final int blockSize;
    private final int rowGranularity;
    private final Packing packing;
    private final Scaling scaling;
    private final Modelopt modelopt;

    QuantFormat(String cliName, DType weightType, float elementMax, DType scaleType, int blockSize, int rowGranularity, Packing packing,
                Scaling scaling, Modelopt modelopt) {
        this.cliName = cliName;
        this.weightType = weightType;
        this.elementMax = elementMax;
        this.scaleType = scaleType;
        this.blockSize = blockSize;
        this.rowGranularity = rowGranularity;
        this.packing = packing;
        this.scaling = scaling;
        this.modelopt = modelopt;
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

    /** The largest magnitude of an element code: 448 (E4M3), 6 (E2M1), 127 (INT8), 7 (INT4). */
    public float elementMax() {
        return elementMax;
    }

    public Packing packing() {
        return packing;
    }

    public Scaling scaling() {
        return scaling;
    }

    public Modelopt modelopt() {
        return modelopt;
    }

    /** Bits of one element code: 4 where two codes share a byte, else 8. */
    public int elementBits() {
        return packing == Packing.NONE ? 8 : 4;
    }

    /** Whether rows 2k and 2k+1 share each byte (int4_g128): such a weight is read and quantized in pairs of rows. */
    public boolean packsRowPairs() {
        return packing == Packing.ROW_PAIRS;
    }

    /** Whether the kernel divides by a scale computed from the amax of the whole tensor (fp8, nvfp4). */
    public boolean usesTensorAmax() {
        return scaling != Scaling.LOCAL;
    }

    /**
     * Whether {@code weight_scale} is the per-tensor scale itself (fp8): one f32 per tensor, or per expert of a
     * stack, written by the executor; the kernel then writes no scales.
     */
    public boolean scaleIsTensorScale() {
        return scaling == Scaling.TENSOR;
    }

    /** Whether the format has a separate global scale output, {@code weight_scale_2} (nvfp4). */
    public boolean hasScale2() {
        return scaling == Scaling.BLOCKS_UNDER_TENSOR;
    }

    /**
     * Whether the format quantizes activations with a static per-tensor scale ({@code input_scale}, from a
     * calibrated input amax). Model Optimizer's recipes calibrate one exactly for the formats whose weights
     * have a per-tensor scale (fp8, nvfp4), the activations quantized as the weights are; the others are
     * weight-only or scale activations dynamically.
     */
    public boolean quantizesActivations() {
        return usesTensorAmax();
    }

    /**
     * The amax a per-tensor scale of 1 stands for: the element maximum (fp8's 448), or, under E4M3 block
     * scales, the element maximum times the largest block scale (nvfp4's 6 * 448).
     */
    public float tensorScaleRange() {
        return switch (scaling) {
            case TENSOR -> elementMax;
            case BLOCKS_UNDER_TENSOR -> elementMax * FloatFormats.E4M3_MAX;
            case LOCAL -> throw new IllegalStateException(cliName + " has no per-tensor scale");
        };
    }

    /**
     * The per-tensor scale from the tensor's amax: fp8's {@code weight_scale} (amax / 448) and nvfp4's
     * {@code weight_scale_2} (amax / (6 * 448)), both as f32 divisions. Also the {@code input_scale} from
     * a calibrated input amax. An amax of 0 (an all-zero tensor) gives 1: every code is zero whatever the
     * scale, and a zero scale would divide by zero.
     */
    public float tensorScale(float amax) {
        if (amax == 0) {
            return 1f;
        }
        return amax / tensorScaleRange();
    }

    /** The shape of the quantized weight of a {@code [..., out, in]} weight. */
    public Shape weightShape(Shape w) {
        return switch (packing) {
            case NONE -> w;
            case COLUMN_PAIRS -> w.with(-1, paddedIn(w.dim(-1)) / 2);
            case ROW_PAIRS -> w.with(-2, w.dim(-2) / 2);
        };
    }

    /** The shape of the matrix a quantized weight of shape {@code packed} decodes to (without padding columns). */
    public Shape decodedShape(Shape packed) {
        return switch (packing) {
            case NONE -> packed;
            case COLUMN_PAIRS -> packed.with(-1, packed.dim(-1) * 2);
            case ROW_PAIRS -> packed.with(-2, packed.dim(-2) * 2);
        };
    }

    /**
     * Whether a weight of {@code in} columns needs padding columns that would change its stored shape (the
     * packed formats, with {@code in} not a whole number of blocks): loaders check that shape against the config.
     */
    public boolean padsWeight(long in) {
        return packing == Packing.COLUMN_PAIRS && paddedIn(in) != in;
    }

    /** The shape of {@code weight_scale}. fp8 has one per tensor (a 0-d tensor), or one per expert of a stack. */
    public Shape scaleShape(Shape w) {
        long out = w.dim(-2);
        long in = w.dim(-1);
        return switch (this) {
            case FP8 -> w.dropLast().dropLast();
            case FP8_PC, INT8_WO -> w.dropLast();
            case FP8_PB -> w.with(-2, ceilDiv(out, blockSize)).with(-1, ceilDiv(in, blockSize));
            case NVFP4, MXFP4, MXFP8, INT4_G128 -> w.with(-1, paddedIn(in) / blockSize);
        };
    }

    /** {@code in} rounded up to a whole number of blocks. */
    public long paddedIn(long in) {
        return blockSize == 0 ? in : ceilDiv(in, blockSize) * blockSize;
    }

    /** The format of a Model Optimizer weight quantizer's attributes (see {@link Quantizer#matches}), or null. */
    public static QuantFormat fromModeloptQuantizer(String numBits, Object axis, Map<?, ?> blockSizes, String scaleBits) {
        for (QuantFormat f : values()) {
            if (f.modelopt.quantizer().matches(numBits, axis, blockSizes, scaleBits)) {
                return f;
            }
        }
        return null;
    }

    /** The format Model Optimizer's {@code quant_algo} names (any casing), or null. */
    public static QuantFormat fromModeloptAlgo(String quantAlgo) {
        for (QuantFormat f : values()) {
            if (f.modelopt.quantAlgo().equalsIgnoreCase(quantAlgo)) {
                return f;
            }
        }
        return null;
    }

    private static long ceilDiv(long a, long b) {
        return (a + b - 1) / b;
    }
}
