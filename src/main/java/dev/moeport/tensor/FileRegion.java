package dev.moeport.tensor;

import dev.moeport.MoeportException;
import dev.moeport.io.IoErrors;
import java.io.IOException;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Path;

/**
 * Where a tensor's bytes lie in an open file, for reading them with positioned reads ({@code pread}) instead of
 * through the mapping: no page faults, no pages to release, read-ahead as for any sequential reader, and a file
 * that shrinks under a run gives a clean error instead of a SIGBUS in the middle of compiled code.
 */
public record FileRegion(FileChannel channel, Path file, long offset) {
    /** Largest single read: ByteBuffers index with an int. */
    private static final long MAX_READ = 1 << 30;

    /** The region {@code start} bytes further on. */
    public FileRegion plus(long start) {
        return new FileRegion(channel, file, offset + start);
    }

    /** Reads {@code into.byteSize()} bytes from this region into {@code into}; {@code tensor} names it in errors. */
    public void read(MemorySegment into, String tensor) {
        long n = into.byteSize();
        try {
            for (long done = 0; done < n; ) {
                ByteBuffer buffer = into.asSlice(done, Math.min(MAX_READ, n - done)).asByteBuffer();
                while (buffer.hasRemaining()) {
                    int read = channel.read(buffer, offset + done + buffer.position());
                    if (read < 0) {
                        throw new MoeportException(file + ": ends inside tensor '" + tensor + "' (bytes " + offset + ".." + (offset + n)
                                + "); was the file changed or truncated while moeport read it?");
                    }
                }
                done += buffer.limit();
            }
        } catch (IOException e) {
            throw new MoeportException(file + ": cannot read tensor '" + tensor + "' (" + IoErrors.why(e) + ")", e);
        }
    }
}
