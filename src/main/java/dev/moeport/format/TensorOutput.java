package dev.moeport.format;

import java.lang.foreign.MemorySegment;

/**
 * Where a run's output tensors go, in whatever file format: producers fill each tensor's bytes through its
 * {@link Sink}; {@link #commit()} makes the output complete and visible; {@link #close()} without a commit
 * removes what was written.
 */
public interface TensorOutput extends AutoCloseable {

    /** The sink of tensor {@code name}. */
    Sink sink(String name);

    /** Checks that every tensor was written in full and puts the output in place. */
    void commit();

    /**
     * Writes the files that make the data files a checkpoint (an index, metadata, a tracker file). They follow
     * from the plan alone, so any part of a plan split over processes may write them, before its data.
     */
    void writeIndexFiles();

    /** Without a commit, removes the partial output; after one, does nothing. */
    @Override
    void close();

    /**
     * Hears of each output file once it is complete and renamed into place, with the CRC-32C of the bytes written to
     * it when the writer knows it ({@link dev.moeport.io.WrittenCrc}).
     */
    @FunctionalInterface
    interface FinishedFile {
        void finished(java.nio.file.Path file, java.util.OptionalLong crc32c);
    }

    /** A place to write one tensor's bytes (row-major, as the plan lays them out), in any order, from any thread. */
    interface Sink {
        /** Writes {@code bytes} at {@code offset} of this tensor. */
        void write(long offset, MemorySegment bytes);
    }
}
