package dev.moeport.format;

import dev.moeport.MoeportException;
import dev.moeport.tensor.Tensor;
import java.nio.file.Path;
import java.util.Collections;
import java.util.LinkedHashMap;
import java.util.SequencedMap;

/**
 * An opened checkpoint, whatever its on-disk format: a map from tensor name to {@link Tensor}, valid
 * until {@link #close()}. Nothing is read into the heap by opening it; tensors are views of mapped files.
 */
public interface Checkpoint extends AutoCloseable {

    /** The path the user gave (a file, an index or a folder). */
    Path location();

    /** A short name of the on-disk format, e.g. {@code safetensors}. */
    String format();

    /** Every tensor, in a stable order (file order, then offset). */
    SequencedMap<String, Tensor> tensors();

    /**
     * Entries of the checkpoint that are not model tensors and are left out of {@link #tensors()}
     * (optimizer state, rng state, modules' extra state, Megatron's common state, pickled objects), name to reason.
     */
    default SequencedMap<String, String> skipped() {
        return Collections.unmodifiableSequencedMap(new LinkedHashMap<>());
    }

    /** The tensor of this name; an error naming the checkpoint when there is none. */
    default Tensor tensor(String name) {
        Tensor t = tensors().get(name);
        if (t == null) {
            throw new MoeportException(location() + ": no tensor named '" + name + "'");
        }
        return t;
    }

    default boolean contains(String name) {
        return tensors().containsKey(name);
    }

    /** Total bytes of tensor data. */
    default long totalBytes() {
        return tensors().values().stream().mapToLong(Tensor::byteSize).sum();
    }

    @Override
    void close();
}
