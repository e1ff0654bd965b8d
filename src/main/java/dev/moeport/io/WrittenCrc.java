package dev.moeport.io;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.OptionalLong;
import java.util.function.ObjLongConsumer;
import java.util.zip.CRC32C;

/**
 * The CRC-32C of a file, computed from the bytes written to it, in any order and from any thread, so that a
 * finished file need not be read back for its checksum: for outputs larger than memory, reading back read every
 * output byte from the disk a second time. Known only when the recorded writes tile the file exactly.
 */
public final class WrittenCrc {
    /** CRC-32C's polynomial, bit-reversed (Castagnoli). */
    private static final int POLYNOMIAL = 0x82F63B78;

    private record Region(long offset, long length, int crc) {}

    private final List<Region> regions = new ArrayList<>();

    /**
     * Records the bytes {@code bytes} holds (position to limit, left as they are) as written at {@code offset}; never
     * the bytes of a mapped input ({@link #readBack}).
     */
    public void record(long offset, ByteBuffer bytes) {
        CRC32C crc = new CRC32C();
        long length = bytes.remaining();
        crc.update(bytes.duplicate());
        synchronized (this) {
            regions.add(new Region(offset, length, (int) crc.getValue()));
        }
    }

    /** Bytes read back at a time by {@link #readBack}. */
    private static final ThreadLocal<ByteBuffer> READ_BACK = ThreadLocal.withInitial(() -> ByteBuffer.allocateDirect(1 << 20));

    /**
     * Hands {@code [position, position + length)} of {@code channel}, just written, to {@code each} in pieces (with each
     * piece's position): what was written from a mapped input is checksummed from the file, not from the mapping, whose
     * read would crash the JVM (SIGBUS) if the input shrank, where the write itself reports EFAULT. The pages are the
     * ones just written, in the page cache.
     */
    public static void readBack(FileChannel channel, long position, long length, ObjLongConsumer<ByteBuffer> each) throws IOException {
        ByteBuffer buffer = READ_BACK.get();
        for (long done = 0; done < length; ) {
            buffer.clear().limit((int) Math.min(buffer.capacity(), length - done));
            int n = channel.read(buffer, position + done);
            if (n <= 0) {
                throw new IOException("cannot read back what was written at " + (position + done));
            }
            buffer.flip();
            each.accept(buffer, position + done);
            done += n;
        }
    }

    /** The CRC-32C of the file's {@code length} bytes, or empty when the writes left a gap or overlapped. */
    public synchronized OptionalLong of(long length) {
        List<Region> sorted = new ArrayList<>(regions);
        sorted.sort(Comparator.comparingLong(Region::offset));
        long at = 0;
        int crc = 0; // the CRC of no bytes
        for (Region r : sorted) {
            if (r.length() == 0) {
                continue;
            }
            if (r.offset() != at) {
                return OptionalLong.empty();
            }
            crc = combine(crc, r.crc(), r.length());
            at += r.length();
        }
        return at == length ? OptionalLong.of(Integer.toUnsignedLong(crc)) : OptionalLong.empty();
    }

    /**
     * The CRC of bytes A then B from the CRCs of A and B and B's length: A's CRC carried through B's length of zero
     * bits (multiplication by x^(8 lengthB) modulo the polynomial, as 32x32 bit matrices over GF(2) squared for each
     * bit of the length), plus B's.
     */
    static int combine(int crcA, int crcB, long lengthB) {
        int[] odd = new int[32]; // the operator for one zero bit
        odd[0] = POLYNOMIAL;
        for (int n = 1; n < 32; n++) {
            odd[n] = 1 << (n - 1);
        }
        int[] even = new int[32];
        square(even, odd); // two zero bits
        square(odd, even); // four
        long length = lengthB;
        int crc = crcA;
        while (length != 0) {
            square(even, odd); // one zero byte, then 4, 16, ...
            if ((length & 1) != 0) {
                crc = times(even, crc);
            }
            length >>>= 1;
            if (length == 0) {
                break;
            }
            square(odd, even); // 2 zero bytes, then 8, 32, ...
            if ((length & 1) != 0) {
                crc = times(odd, crc);
            }
            length >>>= 1;
        }
        return crc ^ crcB;
    }

    private static int times(int[] matrix, int vector) {
        int sum = 0;
        for (int i = 0; vector != 0; i++, vector >>>= 1) {
            if ((vector & 1) != 0) {
                sum ^= matrix[i];
            }
        }
        return sum;
    }

    private static void square(int[] square, int[] matrix) {
        for (int n = 0; n < 32; n++) {
            square[n] = times(matrix, matrix[n]);
        }
    }
}
