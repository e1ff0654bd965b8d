package dev.moeport.format.torchdist;

import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.List;
import java.util.zip.CRC32;

/**
 * The byte layout of one {@code torch.save} zip as PyTorch writes it: STORED entries under
 * {@code archive/}, each entry's data at a multiple of 64 from the zip's start (padding in the local
 * extra field), a central directory, zip64 end records. A tensor's bytes are entry {@code data/0}, written
 * by the caller in place (streaming); everything around them is known up front except that entry's CRC-32,
 * so {@link #prefix} and {@link #suffix} take it once the data is written.
 */
final class TorchSaveZip {
    private static final String PREFIX = "archive/";
    /** torch.save's serialization id: any 40 characters; moeport's are fixed, so outputs are reproducible. */
    private static final String SERIALIZATION_ID = "0".repeat(40);
    private static final int ALIGNMENT = 64;
    private static final long U32_MAX = 0xFFFFFFFFL;

    private record Entry(String name, byte[] bytes, long size, long headerOffset, int headerLength) {
        boolean external() {
            return bytes == null;
        }

        boolean zip64() {
            return size >= U32_MAX || headerOffset >= U32_MAX;
        }
    }

    private final List<Entry> entries = new ArrayList<>();
    private final long dataOffset;
    private final long dataBytes;
    private final long directoryOffset;
    private final long length;

    private TorchSaveZip(byte[] pickle, long dataBytes, boolean hasData) {
        this.dataBytes = dataBytes;
        List<Object[]> parts = new ArrayList<>();
        parts.add(new Object[] {"data.pkl", pickle});
        parts.add(new Object[] {".format_version", ascii("1")});
        parts.add(new Object[] {".storage_alignment", ascii(Integer.toString(ALIGNMENT))});
        parts.add(new Object[] {"byteorder", ascii("little")});
        if (hasData) {
            parts.add(new Object[] {"data/0", null});
        }
        parts.add(new Object[] {"version", ascii("3\n")});
        parts.add(new Object[] {".data/serialization_id", ascii(SERIALIZATION_ID)});
        long at = 0;
        long data = -1;
        for (Object[] part : parts) {
            String name = PREFIX + part[0];
            byte[] bytes = (byte[]) part[1];
            long size = bytes != null ? bytes.length : dataBytes;
            int fixed = 30 + name.length() + (size >= U32_MAX ? 20 : 0);
            int pad = (int) Math.floorMod(-(at + fixed), (long) ALIGNMENT);
            if (pad > 0 && pad < 4) {
                pad += ALIGNMENT; // a padding extra field needs its own 4-byte header
            }
            Entry e = new Entry(name, bytes, size, at, fixed + pad);
            entries.add(e);
            if (e.external()) {
                data = at + e.headerLength();
            }
            at += e.headerLength() + size;
        }
        this.dataOffset = data;
        this.directoryOffset = at;
        long directory = 0;
        for (Entry e : entries) {
            directory += 46 + e.name().length() + (e.zip64() ? 28 : 0);
        }
        this.length = at + directory + 56 + 20 + 22;
    }

    /** A zip holding one tensor's {@code dataBytes} bytes, rebuilt by {@code pickle}. */
    static TorchSaveZip tensor(byte[] pickle, long dataBytes) {
        return new TorchSaveZip(pickle, dataBytes, true);
    }

    /** A zip holding a pickled object only (torch.save of a Python object). */
    static TorchSaveZip object(byte[] pickle) {
        return new TorchSaveZip(pickle, 0, false);
    }

    /** Where entry {@code data/0} starts in the zip (a multiple of 64); -1 without one. */
    long dataOffset() {
        return dataOffset;
    }

    long length() {
        return length;
    }

    /** The bytes before the tensor data (all of the zip for an object), given the data's CRC-32. */
    byte[] prefix(int dataCrc) {
        return dataOffset < 0 ? bytes(0, length, dataCrc) : bytes(0, dataOffset, dataCrc);
    }

    /** The bytes after the tensor data, given its CRC-32 (empty for an object). */
    byte[] suffix(int dataCrc) {
        return dataOffset < 0 ? new byte[0] : bytes(dataOffset + dataBytes, length, dataCrc);
    }

    private byte[] bytes(long from, long to, int dataCrc) {
        ByteBuffer all = ByteBuffer.allocate((int) (to - from)).order(ByteOrder.LITTLE_ENDIAN);
        for (Entry e : entries) {
            if (e.headerOffset() >= from && e.headerOffset() < to) {
                all.position((int) (e.headerOffset() - from));
                localHeader(all, e, crc(e, dataCrc));
                if (!e.external()) {
                    all.put(e.bytes());
                }
            }
        }
        if (directoryOffset >= from && directoryOffset < to) {
            all.position((int) (directoryOffset - from));
            for (Entry e : entries) {
                centralHeader(all, e, crc(e, dataCrc));
            }
            long directorySize = all.position() + from - directoryOffset;
            long zip64End = directoryOffset + directorySize;
            all.putInt(0x06064b50).putLong(44).putShort((short) 45).putShort((short) 45).putInt(0).putInt(0)
                    .putLong(entries.size()).putLong(entries.size()).putLong(directorySize).putLong(directoryOffset);
            all.putInt(0x07064b50).putInt(0).putLong(zip64End).putInt(1);
            all.putInt(0x06054b50).putShort((short) 0).putShort((short) 0)
                    .putShort((short) entries.size()).putShort((short) entries.size())
                    .putInt((int) Math.min(directorySize, U32_MAX)).putInt((int) Math.min(directoryOffset, U32_MAX)).putShort((short) 0);
        }
        return all.array();
    }

    private static int crc(Entry e, int dataCrc) {
        if (e.external()) {
            return dataCrc;
        }
        CRC32 crc = new CRC32();
        crc.update(e.bytes());
        return (int) crc.getValue();
    }

    private static void localHeader(ByteBuffer b, Entry e, int crc) {
        boolean big = e.size() >= U32_MAX;
        int extra = e.headerLength() - 30 - e.name().length();
        b.putInt(0x04034b50).putShort((short) (big ? 45 : 20)).putShort((short) 0).putShort((short) 0)
                .putShort((short) 0).putShort((short) 0x21).putInt(crc)
                .putInt((int) Math.min(e.size(), U32_MAX)).putInt((int) Math.min(e.size(), U32_MAX))
                .putShort((short) e.name().length()).putShort((short) extra).put(ascii(e.name()));
        if (big) {
            b.putShort((short) 1).putShort((short) 16).putLong(e.size()).putLong(e.size());
            extra -= 20;
        }
        if (extra > 0) {
            b.putShort((short) 0x4246).putShort((short) (extra - 4)); // "FB": padding, as PyTorch writes it
            b.position(b.position() + extra - 4);
        }
    }

    private static void centralHeader(ByteBuffer b, Entry e, int crc) {
        b.putInt(0x02014b50).putShort((short) 45).putShort((short) (e.zip64() ? 45 : 20)).putShort((short) 0)
                .putShort((short) 0).putShort((short) 0).putShort((short) 0x21).putInt(crc)
                .putInt((int) (e.zip64() ? U32_MAX : e.size())).putInt((int) (e.zip64() ? U32_MAX : e.size()))
                .putShort((short) e.name().length()).putShort((short) (e.zip64() ? 28 : 0)).putShort((short) 0)
                .putShort((short) 0).putShort((short) 0).putInt(0)
                .putInt((int) (e.zip64() ? U32_MAX : e.headerOffset())).put(ascii(e.name()));
        if (e.zip64()) {
            b.putShort((short) 1).putShort((short) 24).putLong(e.size()).putLong(e.size()).putLong(e.headerOffset());
        }
    }

    private static byte[] ascii(String s) {
        return s.getBytes(StandardCharsets.US_ASCII);
    }
}
