package dev.moeport.exec;

import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;

/**
 * One worker's reusable native buffers, numbered by purpose so that a job can hold several at once;
 * each grows to the largest size asked for and is then reused, so a run allocates a few chunks per
 * thread in all.
 */
public final class Scratch implements AutoCloseable {
    /** Rows gathered from several pieces. */
    static final int GATHER = 0;
    /** A kernel's main output (quantized weight, cast or dequantized values). */
    static final int OUTPUT = 1;
    /** A kernel's scale output. */
    static final int SCALES = 2;
    /** Input rounded to the export dtype before quantization. */
    static final int CAST = 3;
    /** Input copied out of a mapping for a kernel. */
    static final int INPUT = 4;
    private static final int SLOTS = 5;

    private final Arena arena = Arena.ofShared();
    private final MemorySegment[] buffers = new MemorySegment[SLOTS];
    private final MemorySegment scalar = arena.allocate(4, 4);
    private MemorySegment zeros = MemorySegment.NULL;
    private Scratch second;

    /** A buffer of at least {@code size} bytes for purpose {@code slot}; its old content is undefined. */
    public MemorySegment buffer(int slot, long size) {
        MemorySegment b = buffers[slot];
        if (b == null || b.byteSize() < size) {
            b = arena.allocate(Math.max(size, b == null ? 0 : b.byteSize() * 2), 64);
            buffers[slot] = b;
        }
        return b.asSlice(0, size);
    }

    /** {@code size} zero bytes. */
    MemorySegment zeros(long size) {
        if (zeros.byteSize() < size) {
            zeros = arena.allocate(size, 64);
        }
        return zeros.asSlice(0, size);
    }

    /** One little-endian f32. */
    MemorySegment f32(float value) {
        scalar.set(ValueLayout.JAVA_FLOAT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN), 0, value);
        return scalar;
    }

    /** A second set of buffers, for a job that gathers two sources at once. */
    public Scratch second() {
        if (second == null) {
            second = new Scratch();
        }
        return second;
    }

    @Override
    public void close() {
        if (second != null) {
            second.close();
        }
        arena.close();
    }
}
