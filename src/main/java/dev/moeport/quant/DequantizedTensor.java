package dev.moeport.quant;

import dev.moeport.MoeportException;
import dev.moeport.tensor.DType;
import dev.moeport.tensor.FloatFormats;
import dev.moeport.tensor.Shape;
import dev.moeport.tensor.Tensor;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;

/**
 * A quantized weight seen as the floating-point tensor it stands for: narrowing is free (it narrows
 * the packed weight and its scales), and {@link #bytes} decodes just the rows asked for into memory
 * from the caller's arena. So a quantized checkpoint can be the input of any conversion, streamed.
 *
 * @param weight the packed weight {@code [..., out, in']}
 * @param scale {@code weight_scale}: per row block; fp8's per-tensor (0-d) or per-expert ({@code [E]})
 *     scale; fp8_pb's {@code [ceil(out/128), ceil(in/128)]} blocks (DeepSeek's {@code weight_scale_inv})
 * @param scale2 nvfp4's 0-d {@code weight_scale_2}, else null
 * @param firstRow for fp8_pb, the row of the whole matrix this view starts at (its blocks are 128 rows tall)
 */
public record DequantizedTensor(QuantKernel kernel, QuantFormat format, Tensor weight, Tensor scale, Tensor scale2, DType dtype,
                                long firstRow) implements Tensor {
    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);

    public DequantizedTensor(QuantKernel kernel, QuantFormat format, Tensor weight, Tensor scale, Tensor scale2, DType dtype) {
        this(kernel, format, weight, scale, scale2, dtype, 0);
    }

    @Override
    public String name() {
        return weight.name();
    }

    @Override
    public Shape shape() {
        return format.decodedShape(weight.shape());
    }

    @Override
    public String where() {
        return weight.where();
    }

    @Override
    public long storedBytes() {
        return weight.storedBytes() + scale.storedBytes() + (scale2 == null ? 0 : scale2.storedBytes());
    }

    @Override
    public boolean decodes() {
        return true;
    }

    @Override
    public String transform() {
        return "decode " + format.cliName();
    }

    /** Whether the scale follows the outermost dimension of the weight when it is narrowed. */
    private boolean scaleFollowsRows() {
        return switch (format) {
            case FP8 -> scale.rank() == 1 && weight.rank() > 2;
            case FP8_PB -> weight.rank() > 2;
            case FP8_PC, NVFP4, MXFP4, MXFP8, INT8_WO, INT4_G128 -> true;
        };
    }

    @Override
    public Tensor narrow(long start, long count, String newName) {
        if (format.packsRowPairs() && weight.rank() == 2) {
            if (start % 2 != 0 || count % 2 != 0) {
                throw new IllegalArgumentException(where() + ": " + format.cliName() + " rows are read in pairs, not [" + start + ", " + (start + count) + ")");
            }
            return new DequantizedTensor(kernel, format, weight.narrow(start / 2, count / 2, newName), scale.narrow(start, count, scale.name()),
                    scale2, dtype, 0);
        }
        Tensor s = scaleFollowsRows() ? scale.narrow(start, count, scale.name()) : scale;
        long row = weight.rank() == 2 ? firstRow + start : firstRow;
        return new DequantizedTensor(kernel, format, weight.narrow(start, count, newName), s, scale2, dtype, row);
    }

    @Override
    public Tensor select(long index, String newName) {
        Tensor s = scaleFollowsRows() ? scale.select(index, scale.name() + "[" + index + "]") : scale;
        long row = weight.rank() == 2 ? firstRow + index : 0;
        return new DequantizedTensor(kernel, format, weight.select(index, newName), s, scale2, dtype, row);
    }

    @Override
    public MemorySegment bytes(Arena scratch) {
        MemorySegment out = scratch.allocate(byteSize(), 64);
        if (weight.rank() <= 2) {
            decodeMatrix(scratch, out);
        } else {
            long slab = out.byteSize() / weight.shape().dim(0);
            for (long i = 0; i < weight.shape().dim(0); i++) {
                ((DequantizedTensor) select(i, name())).decodeMatrix(scratch, out.asSlice(i * slab, slab));
            }
        }
        return out;
    }

    private void decodeMatrix(Arena scratch, MemorySegment out) {
        long rows = weight.rank() == 1 ? 1 : weight.shape().dim(0);
        long cols = shape().dim(-1);
        MemorySegment packed = weight.bytes(scratch);
        if (QuantMath.kernelDecodes(format)) {
            Tensor perTensor = !format.usesTensorAmax() ? null : format.scaleIsTensorScale() ? scale : scale2;
            float tensorScale = perTensor == null ? 1f : scalar(perTensor, scratch);
            MemorySegment scales = format.scaleIsTensorScale() ? MemorySegment.NULL : scale.bytes(scratch);
            kernel.dequantize(format, packed, scales, tensorScale, rows, cols, dtype, out);
            return;
        }
        MemorySegment scales = scale.bytes(scratch);
        switch (format) {
            case FP8_PB -> decodeBlocks(packed, scales, rows, cols, out);
            case FP8_PC -> decodeFp8Rows(packed, scales, rows, cols, out);
            case INT8_WO -> decodeInt8(packed, scales, rows, cols, out);
            case INT4_G128 -> decodeInt4(packed, scales, rows * 2, cols, out);
            case FP8, NVFP4, MXFP4, MXFP8 -> throw new AssertionError(format); // the kernel decodes these, above
        }
    }

    /** 128 x 128 blocks, each an fp8 tensor of its own scale: the kernel's fp8 decoding, one block-row segment at a time. */
    private void decodeBlocks(MemorySegment packed, MemorySegment blockScales, long rows, long cols, MemorySegment out) {
        int block = format.blockSize();
        long blocksPerRow = (cols + block - 1) / block;
        int width = dtype.byteWidth();
        for (long r = 0; r < rows; r++) {
            long scaleRow = (firstRow + r) / block;
            for (long b = 0; b < blocksPerRow; b++) {
                long c0 = b * block;
                long n = Math.min(block, cols - c0);
                float blockScale = blockScales.getAtIndex(F32, scaleRow * blocksPerRow + b);
                kernel.dequantize(QuantFormat.FP8, packed.asSlice(r * cols + c0, n), MemorySegment.NULL, blockScale, 1, n, dtype,
                        out.asSlice((r * cols + c0) * width, n * width));
            }
        }
    }

    /** fp8_pc: each row an fp8 tensor of its own scale. */
    private void decodeFp8Rows(MemorySegment packed, MemorySegment rowScales, long rows, long cols, MemorySegment out) {
        int width = dtype.byteWidth();
        for (long r = 0; r < rows; r++) {
            kernel.dequantize(QuantFormat.FP8, packed.asSlice(r * cols, cols), MemorySegment.NULL, rowScales.getAtIndex(F32, r), 1, cols, dtype,
                    out.asSlice(r * cols * width, cols * width));
        }
    }

    /** int8_wo: value = q * scale of its row, in f32, rounded to the output dtype. */
    private void decodeInt8(MemorySegment packed, MemorySegment rowScales, long rows, long cols, MemorySegment out) {
        for (long r = 0; r < rows; r++) {
            float s = rowScales.getAtIndex(F32, r);
            for (long c = 0; c < cols; c++) {
                FloatFormats.write(out, dtype, r * cols + c, packed.get(ValueLayout.JAVA_BYTE, r * cols + c) * s);
            }
        }
    }

    /**
     * int4_g128: rows 2k and 2k+1 share the bytes of packed row k (low and high nibble, two's
     * complement); value = q * the scale of its row and group of 128 columns.
     */
    private void decodeInt4(MemorySegment packed, MemorySegment groupScales, long rows, long cols, MemorySegment out) {
        int group = format.blockSize();
        long groups = (cols + group - 1) / group;
        for (long r = 0; r < rows; r++) {
            for (long c = 0; c < cols; c++) {
                int b = packed.get(ValueLayout.JAVA_BYTE, r / 2 * cols + c);
                int q = (r % 2 == 0 ? b << 28 : b << 24) >> 28;
                FloatFormats.write(out, dtype, r * cols + c, q * groupScales.getAtIndex(F32, r * groups + c / group));
            }
        }
    }

    private static float scalar(Tensor t, Arena arena) {
        if (t.numel() != 1) {
            throw new MoeportException(t.where() + ": expected one per-tensor scale, found " + t.describe());
        }
        return t.bytes(arena).get(F32, 0);
    }
}
