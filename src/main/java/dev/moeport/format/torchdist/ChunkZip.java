package dev.moeport.format.torchdist;

import dev.moeport.MoeportException;
import dev.moeport.io.MappedMemory;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.SequencedMap;
import java.util.zip.CRC32;

/**
 * The entries of a {@code torch.save} zip lying in a byte range of a mapped file, found through its
 * central directory (the local headers of PyTorch's zips carry zero sizes, with a data descriptor
 * after the data). Offsets are relative to the first byte of the range. Only STORED (uncompressed)
 * entries are accepted, so each entry's data is a zero-copy slice of the mapping. The directory is
 * not trusted: each entry's local header must name it, no two entries may share bytes, and the
 * data must have the CRC-32 the directory gives (a flipped bit would otherwise export silently).
 */
final class ChunkZip {
    private static final int LOCAL_HEADER = 0x04034b50;
    private static final int CENTRAL_HEADER = 0x02014b50;
    private static final int END = 0x06054b50;
    private static final int ZIP64_END = 0x06064b50;
    private static final int ZIP64_LOCATOR = 0x07064b50;
    private static final int END_SIZE = 22;
    private static final int LOCATOR_SIZE = 20;
    private static final int ZIP64_END_SIZE = 56;
    private static final int CENTRAL_SIZE = 46;
    private static final int LOCAL_SIZE = 30;
    private static final int MAX_COMMENT = 0xffff;
    private static final int ZIP64_EXTRA = 0x0001;
    private static final long U32_MAX = 0xffffffffL;

    private static final ValueLayout.OfShort U16 = ValueLayout.JAVA_SHORT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    private static final ValueLayout.OfInt U32 = ValueLayout.JAVA_INT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);
    private static final ValueLayout.OfLong U64 = ValueLayout.JAVA_LONG_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);

    private final MemorySegment zip;
    private final String where;

    private ChunkZip(MemorySegment zip, String where) {
        this.zip = zip;
        this.where = where;
    }

    /** The entries of the zip that is exactly {@code zip}, name to data, in central-directory order. */
    static SequencedMap<String, MemorySegment> entries(MemorySegment zip, String where) {
        return new ChunkZip(zip, where).read();
    }

    private SequencedMap<String, MemorySegment> read() {
        long end = findEnd();
        long count = u16(end + 10);
        long directorySize = u32(end + 12);
        long directoryOffset = u32(end + 16);
        long locator = end - LOCATOR_SIZE;
        if (locator >= 0 && u32(locator) == ZIP64_LOCATOR) {
            long record = u64(locator + 8);
            if (record < 0 || record > zip.byteSize() - ZIP64_END_SIZE || u32(record) != ZIP64_END) {
                throw fail("zip64 end record is not where its locator says");
            }
            count = u64(record + 32);
            directorySize = u64(record + 40);
            directoryOffset = u64(record + 48);
        } else if (count == 0xffff || directorySize == U32_MAX || directoryOffset == U32_MAX) {
            throw fail("zip64 sizes without a zip64 end record");
        }
        if (directoryOffset < 0 || directorySize < 0 || directoryOffset > end || directorySize > end - directoryOffset) {
            throw fail("central directory lies outside the zip");
        }
        if (count < 0 || count > directorySize / CENTRAL_SIZE) {
            throw fail("central directory claims " + Long.toUnsignedString(count) + " entries in " + directorySize + " bytes");
        }
        SequencedMap<String, MemorySegment> entries = new LinkedHashMap<>();
        List<long[]> extents = new ArrayList<>(); // {local header, end of data, index}
        List<String> names = new ArrayList<>();
        long p = directoryOffset;
        long directoryEnd = directoryOffset + directorySize;
        for (long i = 0; i < count; i++) {
            if (directoryEnd - p < CENTRAL_SIZE || u32(p) != CENTRAL_HEADER) {
                throw fail("central directory entry " + i + " is malformed");
            }
            int flags = u16(p + 8);
            int method = u16(p + 10);
            long crc = u32(p + 16);
            long compressed = u32(p + 20);
            long size = u32(p + 24);
            int nameLength = u16(p + 28);
            int extraLength = u16(p + 30);
            int commentLength = u16(p + 32);
            long local = u32(p + 42);
            long next = p + CENTRAL_SIZE + nameLength + extraLength + commentLength;
            if (next > directoryEnd) {
                throw fail("central directory entry " + i + " runs past the directory");
            }
            String name = name(p + CENTRAL_SIZE, nameLength);
            long[] wide = zip64(p + CENTRAL_SIZE + nameLength, extraLength, size == U32_MAX, compressed == U32_MAX, local == U32_MAX, name);
            size = wide[0] >= 0 ? wide[0] : size;
            compressed = wide[1] >= 0 ? wide[1] : compressed;
            local = wide[2] >= 0 ? wide[2] : local;
            if ((flags & 1) != 0) {
                throw fail("entry '" + name + "' is encrypted");
            }
            if (method != 0 || compressed != size) {
                throw fail("entry '" + name + "' is compressed (method " + method + "); PyTorch stores its entries uncompressed");
            }
            MemorySegment data = data(local, size, crc, directoryOffset, p + CENTRAL_SIZE, nameLength, name);
            if (entries.putIfAbsent(name, data) != null) {
                throw fail("entry '" + name + "' appears twice");
            }
            extents.add(new long[] {local, data.address() - zip.address() + size, names.size()});
            names.add(name);
            p = next;
        }
        requireDisjoint(extents, names);
        return entries;
    }

    /** No two entries share bytes: a directory pointing two names at one header would alias their data. */
    private void requireDisjoint(List<long[]> extents, List<String> names) {
        extents.sort(Comparator.comparingLong(e -> e[0]));
        for (int i = 1; i < extents.size(); i++) {
            if (extents.get(i)[0] < extents.get(i - 1)[1]) {
                throw fail("entries '" + names.get((int) extents.get(i - 1)[2]) + "' and '" + names.get((int) extents.get(i)[2])
                        + "' overlap");
            }
        }
    }

    /** The end-of-central-directory record: the last one whose comment ends exactly at the end of the zip. */
    private long findEnd() {
        long last = zip.byteSize() - END_SIZE;
        for (long p = last; p >= 0 && p >= last - MAX_COMMENT; p--) {
            if (u32(p) == END && p + END_SIZE + u16(p + 20) == zip.byteSize()) {
                return p;
            }
        }
        throw fail("no zip end record (truncated or not a torch.save zip)");
    }

    /** Sizes and offset from a zip64 extra field, each only where the 32-bit field is 0xffffffff; -1 where absent. */
    private long[] zip64(long extra, int extraLength, boolean wantSize, boolean wantCompressed, boolean wantOffset, String name) {
        long[] values = {-1, -1, -1};
        long end = extra + extraLength;
        for (long p = extra; end - p >= 4; ) {
            int id = u16(p);
            int length = u16(p + 2);
            long body = p + 4;
            if (length > end - body) {
                throw fail("entry '" + name + "' has a malformed extra field");
            }
            if (id == ZIP64_EXTRA) {
                long q = body;
                boolean[] wanted = {wantSize, wantCompressed, wantOffset};
                for (int k = 0; k < 3; k++) {
                    if (wanted[k]) {
                        if (body + length - q < 8) {
                            throw fail("entry '" + name + "' has a short zip64 field");
                        }
                        values[k] = u64(q);
                        q += 8;
                    }
                }
            }
            p = body + length;
        }
        if ((wantSize && values[0] < 0) || (wantCompressed && values[1] < 0) || (wantOffset && values[2] < 0)) {
            throw fail("entry '" + name + "' lacks its zip64 sizes");
        }
        return values;
    }

    /**
     * The data of an entry: after its local header, which must name the same entry (and, unless a
     * data descriptor follows, give the same CRC and sizes), before the central directory, with the
     * directory's CRC-32.
     */
    private MemorySegment data(long local, long size, long crc, long directoryOffset, long centralName, int nameLength, String name) {
        if (local < 0 || local > directoryOffset - LOCAL_SIZE || u32(local) != LOCAL_HEADER) {
            throw fail("entry '" + name + "' has no local header where the directory says");
        }
        int localNameLength = u16(local + 26);
        if (localNameLength != nameLength || local + LOCAL_SIZE + nameLength > directoryOffset
                || MemorySegment.mismatch(zip, local + LOCAL_SIZE, local + LOCAL_SIZE + nameLength, zip, centralName, centralName + nameLength) >= 0) {
            throw fail("the local header at byte " + local + " does not name entry '" + name + "' (the directory points elsewhere)");
        }
        boolean descriptor = (u16(local + 6) & 0x8) != 0;
        long localCrc = u32(local + 14);
        long localCompressed = u32(local + 18);
        long localSize = u32(local + 22);
        boolean zeros = localCrc == 0 && localCompressed == 0 && localSize == 0;
        boolean agree = localCrc == crc && (localSize == U32_MAX || localSize == size) && (localCompressed == U32_MAX || localCompressed == size);
        if (!agree && !(descriptor && zeros)) {
            throw fail("entry '" + name + "': its local header and the directory disagree on its size or CRC");
        }
        long start = local + LOCAL_SIZE + localNameLength + u16(local + 28);
        if (start > directoryOffset || size < 0 || size > directoryOffset - start) {
            throw fail("entry '" + name + "' of " + Long.toUnsignedString(size) + " bytes runs past the zip's data");
        }
        MemorySegment data = zip.asSlice(start, size);
        long actual = crc32(data, name);
        if (actual != crc) {
            throw fail(String.format("entry '%s' has CRC-32 %08x, not the %08x its zip records (the file is damaged)", name, actual, crc));
        }
        return data;
    }

    /** Bytes copied through the heap per CRC step: small enough to stay in cache. */
    private static final int CRC_STEP = 1 << 16;

    /**
     * The CRC-32 of mapped bytes. They are copied to the heap first: a copy out of a mapping whose
     * file shrank fails ({@link MappedMemory}), which becomes a clean error here, where a read inside the
     * CRC intrinsic would crash the JVM.
     */
    private long crc32(MemorySegment data, String name) {
        CRC32 crc = new CRC32();
        byte[] step = new byte[(int) Math.min(CRC_STEP, data.byteSize())];
        for (long at = 0; at < data.byteSize(); at += step.length) {
            int n = (int) Math.min(step.length, data.byteSize() - at);
            if (!MappedMemory.copy(data, at, step, 0, n)) {
                throw fail("entry '" + name + "' could not be read (the file shrank or changed while moeport read it)");
            }
            crc.update(step, 0, n);
        }
        return crc.getValue();
    }

    private String name(long at, int length) {
        try {
            return StandardCharsets.UTF_8.newDecoder()
                    .onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT)
                    .decode(zip.asSlice(at, length).asByteBuffer())
                    .toString();
        } catch (CharacterCodingException e) {
            throw fail("an entry name is not valid UTF-8");
        }
    }

    private int u16(long at) {
        check(at, 2);
        return zip.get(U16, at) & 0xffff;
    }

    private long u32(long at) {
        check(at, 4);
        return zip.get(U32, at) & U32_MAX;
    }

    private long u64(long at) {
        check(at, 8);
        return zip.get(U64, at);
    }

    private void check(long at, int width) {
        if (at < 0 || at > zip.byteSize() - width) {
            throw fail("zip structure points outside the zip");
        }
    }

    private MoeportException fail(String message) {
        return new MoeportException(where + ": " + message);
    }
}
