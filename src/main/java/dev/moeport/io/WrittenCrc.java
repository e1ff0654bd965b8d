package dev.moeport.io;

import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.OptionalLong;

/**
 * The CRC-32C (or CRC-32) of a file, computed from the bytes written to it, in any order and from any thread, so that a
 * finished file need not be read back for its checksum: for outputs larger than memory, reading back read every
 * output byte from the disk a second time. Known only when the recorded writes tile the file exactly.
 */
public final class WrittenCrc {
    /** CRC-32C's polynomial, bit-reversed (Castagnoli): the resume manifest's checksum. */
    private static final int[][] CASTAGNOLI = zeroBytes(0x82F63B78);
    /** CRC-32's (IEEE 802.3): a zip entry's checksum. */
    private static final int[][] IEEE = zeroBytes(0xEDB88320);

    private record Region(long offset, long length, int crc) {}

    private final List<Region> regions = new ArrayList<>();
    /** The operators of the checksum's polynomial ({@link #zeroBytes}). */
    private final int[][] zeros;

    private WrittenCrc(int[][] zeros) {
        this.zeros = zeros;
    }

    /** The CRC-32C of writes ({@link java.util.zip.CRC32C}). */
    public static WrittenCrc crc32c() {
        return new WrittenCrc(CASTAGNOLI);
    }

    /** The CRC-32 of writes ({@link java.util.zip.CRC32}). */
    public static WrittenCrc crc32() {
        return new WrittenCrc(IEEE);
    }

    /** Records that the bytes written at {@code offset}, {@code length} of them, have the checksum {@code crc}. */
    public synchronized void record(long offset, long length, int crc) {
        regions.add(new Region(offset, length, crc));
    }

    /** Bytes recorded so far, overlaps counted twice. */
    public synchronized long recorded() {
        return regions.stream().mapToLong(Region::length).sum();
    }

    /** The checksum of the file's {@code length} bytes, or empty when the writes left a gap or overlapped. */
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
     * For each k, the operator that carries a CRC through 2^k zero bytes: multiplication by x^(8 2^k) modulo the
     * polynomial (bit-reversed), as a 32x32 bit matrix over GF(2) (column n the image of bit n).
     */
    private static int[][] zeroBytes(int polynomial) {
        int[][] zeroBytes = new int[63][];
        int[] bit = new int[32]; // one zero bit
        bit[0] = polynomial;
        for (int n = 1; n < 32; n++) {
            bit[n] = 1 << (n - 1);
        }
        int[] m = bit;
        for (int doubling = 0; doubling < 3; doubling++) {
            m = square(m);
        }
        for (int k = 0; k < zeroBytes.length; k++) {
            zeroBytes[k] = m;
            m = square(m);
        }
        return zeroBytes;
    }

    /** The CRC of bytes A then B from the CRCs of A and B and B's length: A's CRC carried through B's length of zeros, plus B's. */
    int combine(int crcA, int crcB, long lengthB) {
        int crc = crcA;
        for (int k = 0; lengthB != 0; k++, lengthB >>>= 1) {
            if ((lengthB & 1) != 0) {
                crc = times(zeros[k], crc);
            }
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

    private static int[] square(int[] matrix) {
        int[] square = new int[32];
        for (int n = 0; n < 32; n++) {
            square[n] = times(matrix, matrix[n]);
        }
        return square;
    }
}
