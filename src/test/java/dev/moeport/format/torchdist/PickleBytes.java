package dev.moeport.format.torchdist;

import java.io.ByteArrayOutputStream;
import java.lang.foreign.MemorySegment;
import java.nio.charset.StandardCharsets;

/** Hand-written pickles for tests: each part is a byte (an Integer or a Character) or ASCII text. */
final class PickleBytes {
    private PickleBytes() {}

    static byte[] of(Object... parts) {
        ByteArrayOutputStream out = new ByteArrayOutputStream();
        for (Object part : parts) {
            switch (part) {
                case Integer b -> out.write(b);
                case Character c -> out.write(c);
                case String s -> out.writeBytes(s.getBytes(StandardCharsets.US_ASCII));
                default -> throw new IllegalArgumentException(part.toString());
            }
        }
        return out.toByteArray();
    }

    static MemorySegment segment(Object... parts) {
        return MemorySegment.ofArray(of(parts));
    }
}
