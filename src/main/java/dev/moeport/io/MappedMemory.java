package dev.moeport.io;

import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;

/**
 * Copies out of and into file mappings, where a page the kernel cannot give (the file shrank, an I/O error, a full disk)
 * is a fault. The JVM turns a fault inside a copy into an InternalError, but compiled code raises it only at its next
 * safepoint poll, which may lie past the copy's catch: the error then escaped with no word of the file. A return from
 * native code is such a poll, so each copy here that touches a mapping ends with one, inside its catch (copies between
 * other memory cannot fault, and skip it: the direct writer copies every write through here).
 */
public final class MappedMemory {
    private MappedMemory() {}

    /** {@link MemorySegment#copy(MemorySegment, long, MemorySegment, long, long)}; false where a mapping faulted. */
    public static boolean copy(MemorySegment from, long fromOffset, MemorySegment to, long toOffset, long bytes) {
        try {
            MemorySegment.copy(from, fromOffset, to, toOffset, bytes);
            if (from.isMapped() || to.isMapped()) {
                NativeIO.returnFromNative();
            }
            return true;
        } catch (InternalError fault) {
            return false;
        }
    }

    /** {@code count} bytes of {@code from} at {@code fromOffset} into {@code to}; false where the mapping faulted. */
    public static boolean copy(MemorySegment from, long fromOffset, byte[] to, int toIndex, int count) {
        try {
            MemorySegment.copy(from, ValueLayout.JAVA_BYTE, fromOffset, to, toIndex, count);
            if (from.isMapped()) {
                NativeIO.returnFromNative();
            }
            return true;
        } catch (InternalError fault) {
            return false;
        }
    }
}
