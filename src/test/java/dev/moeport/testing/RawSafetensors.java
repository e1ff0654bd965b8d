package dev.moeport.testing;

import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;

/** Writes safetensors files byte by byte, bad ones included, for the reader's tests. */
public final class RawSafetensors {
    private RawSafetensors() {}

    /** A file of the given header text followed by {@code dataBytes} bytes of data (values 0, 1, 2, ...). */
    public static Path write(Path file, String header, int dataBytes) throws IOException {
        byte[] h = header.getBytes(StandardCharsets.UTF_8);
        return write(file, h.length, h, dataBytes);
    }

    /** As {@link #write(Path, String, int)} but with a declared header length that may lie. */
    public static Path write(Path file, long declaredLength, byte[] header, int dataBytes) throws IOException {
        ByteBuffer b = ByteBuffer.allocate(8 + header.length + dataBytes).order(ByteOrder.LITTLE_ENDIAN);
        b.putLong(declaredLength).put(header);
        for (int i = 0; i < dataBytes; i++) {
            b.put((byte) i);
        }
        Files.write(file, b.array());
        return file;
    }
}
