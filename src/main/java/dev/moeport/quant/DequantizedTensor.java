package dev.moeport.quant;

import dev.moeport.MoeportException;
import dev.moeport.tensor.DType;
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
 * @param scale {@code weight_scale}: per row block, or fp8's per-tensor (0-d) or per-expert ({@code [E]}) scale
 * @param scale2 nvfp4's 0-d {@code weight_scale_2}, else null
 */
public record DequantizedTensor(QuantKernel kernel, QuantFormat format, Tensor weight, Tensor scale, Tensor scale2, DType dtype)
        implements Tensor {
    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);

    @Override
    public String name() {
        return weight.name();
    }

    @Override
    public Shape shape() {
        return weight.shape().with(-1, format.unpackedColumns(weight.shape().dim(-1)));
    }

    @Override
    public String where() {
        return weight.where();
    }

    /** Whether the scale has one value per entry of the outermost dimension (fp8's per-expert scale). */
    private boolean scalePerEntry() {
        return format == QuantFormat.FP8 && scale.rank() == 1 && weight.rank() > 2;
    }

    @Override
    public Tensor narrow(long start, long count, String newName) {
        Tensor s = format == QuantFormat.FP8 && !scalePerEntry() ? scale : scale.narrow(start, count, scale.name());
        return new DequantizedTensor(kernel, format, weight.narrow(start, count, newName), s, scale2, dtype);
    }

    @Override
    public Tensor select(long index, String newName) {
        Tensor s = format == QuantFormat.FP8 && !scalePerEntry() ? scale : scale.select(index, scale.name() + "[" + index + "]");
        return new DequantizedTensor(kernel, format, weight.select(index, newName), s, scale2, dtype);
    }

    @Override
    public MemorySegment bytes(Arena scratch) {
        MemorySegment out = scratch.allocate(byteSize(), 64);
        if (weight.rank() <= 2) {
            decodeMatrix(this, scratch, out);
        } else {
            long slab = out.byteSize() / weight.shape().dim(0);
            for (long i = 0; i < weight.shape().dim(0); i++) {
                decodeMatrix((DequantizedTensor) select(i, name()), scratch, out.asSlice(i * slab, slab));
            }
        }
        return out;
    }

    private static void decodeMatrix(DequantizedTensor m, Arena scratch, MemorySegment out) {
        long rows = m.weight.rank() == 1 ? 1 : m.weight.shape().dim(0);
        long cols = m.shape().dim(-1);
        Tensor perTensor = m.format == QuantFormat.FP8 ? m.scale : m.scale2;
        float tensorScale = perTensor == null ? 1f : scalar(perTensor, scratch);
        MemorySegment scales = m.format == QuantFormat.FP8 ? MemorySegment.NULL : m.scale.bytes(scratch);
        m.kernel.dequantize(m.format, m.weight.bytes(scratch), scales, tensorScale, rows, cols, m.dtype, out);
    }

    private static float scalar(Tensor t, Arena arena) {
        if (t.numel() != 1) {
            throw new MoeportException(t.where() + ": expected one per-tensor scale, found " + t.describe());
        }
        return t.bytes(arena).get(F32, 0);
    }
}
