package dev.moeport.format.safetensors;

import static dev.moeport.format.safetensors.SafetensorsHeader.fail;

import dev.moeport.MoeportException;
import dev.moeport.io.DropBehind;
import dev.moeport.io.IoErrors;
import dev.moeport.io.NativeIO;
import dev.moeport.tensor.TensorView;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.channels.FileChannel;
import java.nio.file.AccessDeniedException;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.SequencedMap;

/**
 * One safetensors file, memory-mapped: 8 bytes of little-endian header length, the JSON header, then
 * the data buffer. Each tensor is a zero-copy slice of the mapping, which lives as long as the arena
 * it was opened with.
 */
public final class SafetensorsFile {
    private final Path path;
    private final Map<String, String> metadata;
    private final SequencedMap<String, TensorView> tensors;

    private SafetensorsFile(Path path, Map<String, String> metadata, SequencedMap<String, TensorView> tensors) {
        this.path = path;
        this.metadata = metadata;
        this.tensors = tensors;
    }

    /** Opens and validates {@code path}; its mapping is released when {@code arena} closes. */
    public static SafetensorsFile open(Path path, Arena arena) {
        try (FileChannel channel = FileChannel.open(path, StandardOpenOption.READ)) {
            long fileSize = channel.size();
            if (fileSize < 8) {
                throw fail(path, "file of " + fileSize + " bytes is too short for a safetensors header");
            }
            ByteBuffer lengthBytes = ByteBuffer.allocate(8).order(ByteOrder.LITTLE_ENDIAN);
            readFully(channel, lengthBytes, 0, path);
            long headerLength = lengthBytes.getLong(0);
            if (headerLength < 0 || headerLength > fileSize - 8) {
                throw fail(path, "header length " + Long.toUnsignedString(headerLength)
                        + " is larger than the file (" + fileSize + " bytes)");
            }
            if (headerLength > SafetensorsHeader.MAX_HEADER_BYTES) {
                throw fail(path, "header length " + headerLength + " is larger than the limit of "
                        + SafetensorsHeader.MAX_HEADER_BYTES + " bytes");
            }
            ByteBuffer headerBytes = ByteBuffer.allocate((int) headerLength);
            readFully(channel, headerBytes, 8, path);
            long dataStart = 8 + headerLength;
            long dataSize = fileSize - dataStart;
            SafetensorsHeader header = SafetensorsHeader.parse(path, headerBytes.flip(), dataSize);
            MemorySegment data = dataSize == 0
                    ? MemorySegment.NULL.reinterpret(0)
                    : channel.map(FileChannel.MapMode.READ_ONLY, dataStart, dataSize, arena);
            // Conversions stream every tensor front to back: read ahead far, and drop what was read.
            NativeIO.advise(data, NativeIO.Advice.SEQUENTIAL);
            DropBehind.track(data, path, dataStart, arena);
            SequencedMap<String, TensorView> tensors = new LinkedHashMap<>();
            for (SafetensorsHeader.Entry e : header.entries()) {
                tensors.put(e.name(), new TensorView(e.name(), e.dtype(), e.shape(), data.asSlice(e.begin(), e.byteSize()), path));
            }
            return new SafetensorsFile(path, header.metadata(), tensors);
        } catch (NoSuchFileException e) {
            throw new MoeportException(path + ": no such file");
        } catch (AccessDeniedException e) {
            throw new MoeportException(path + ": permission denied");
        } catch (IOException e) {
            throw new MoeportException(path + ": cannot read (" + IoErrors.why(e) + ")", e);
        }
    }

    private static void readFully(FileChannel channel, ByteBuffer into, long position, Path path) throws IOException {
        while (into.hasRemaining()) {
            int n = channel.read(into, position);
            if (n < 0) {
                throw fail(path, "file ends inside its header");
            }
            position += n;
        }
    }

    public Path path() {
        return path;
    }

    public Map<String, String> metadata() {
        return metadata;
    }

    /** The tensors in the order of their bytes in the file. */
    public SequencedMap<String, TensorView> tensors() {
        return tensors;
    }
}
