package dev.moeport.format.safetensors;

import dev.moeport.tensor.DType;
import dev.moeport.tensor.Shape;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.SequencedMap;

/**
 * Where each output tensor goes: which shard file, at which offset of its data buffer. Pure data,
 * computed from the list of tensors before a byte is written. Tensors fill shards in the given order;
 * a new shard starts when the next tensor would push the current one past the maximum size (a tensor
 * larger than the maximum gets a shard of its own), as Hugging Face's {@code save_pretrained} does.
 */
public final class ShardLayout {
    public static final String SINGLE_FILE = "model.safetensors";
    public static final long DEFAULT_MAX_SHARD_BYTES = 5_000_000_000L;

    /** One tensor to write. */
    public record Spec(String name, DType dtype, Shape shape) {
        public long byteSize() {
            return dtype.byteSize(shape.numel());
        }
    }

    /** One output file and the entries (offsets into its data buffer) it holds. */
    public record Shard(String fileName, SequencedMap<String, SafetensorsHeader.Entry> entries) {
        public long dataBytes() {
            return entries.isEmpty() ? 0 : entries.lastEntry().getValue().end();
        }
    }

    private final List<Shard> shards;
    /** Each tensor's shard index (a shard record's hashCode and equals go through all its entries). */
    private final Map<String, Integer> indexOf;

    private ShardLayout(List<Shard> shards) {
        this.shards = List.copyOf(shards);
        Map<String, Integer> index = new HashMap<>();
        for (int k = 0; k < shards.size(); k++) {
            int shard = k;
            shards.get(k).entries().keySet().forEach(n -> index.put(n, shard));
        }
        this.indexOf = Collections.unmodifiableMap(index);
    }

    public static ShardLayout plan(List<Spec> specs, long maxShardBytes) {
        if (maxShardBytes <= 0) {
            throw new IllegalArgumentException("maximum shard size must be positive");
        }
        List<List<Spec>> groups = new ArrayList<>();
        List<Spec> current = new ArrayList<>();
        long currentBytes = 0;
        java.util.Set<String> seen = new java.util.HashSet<>();
        for (Spec spec : specs) {
            if (!seen.add(spec.name())) {
                throw new IllegalArgumentException("tensor '" + spec.name() + "' is planned twice");
            }
            long size = spec.byteSize();
            if (size < 0) {
                throw new IllegalArgumentException("tensor '" + spec.name() + "': " + spec.dtype() + spec.shape() + " has no whole-byte size");
            }
            if (!current.isEmpty() && currentBytes + size > maxShardBytes) {
                groups.add(current);
                current = new ArrayList<>();
                currentBytes = 0;
            }
            current.add(spec);
            currentBytes += size;
        }
        if (!current.isEmpty() || groups.isEmpty()) {
            groups.add(current);
        }
        List<Shard> shards = new ArrayList<>();
        for (int i = 0; i < groups.size(); i++) {
            String fileName = groups.size() == 1 ? SINGLE_FILE : String.format("model-%05d-of-%05d.safetensors", i + 1, groups.size());
            SequencedMap<String, SafetensorsHeader.Entry> entries = new LinkedHashMap<>();
            long offset = 0;
            for (Spec spec : groups.get(i)) {
                long end = offset + spec.byteSize();
                entries.put(spec.name(), new SafetensorsHeader.Entry(spec.name(), spec.dtype(), spec.shape(), offset, end));
                offset = end;
            }
            shards.add(new Shard(fileName, Collections.unmodifiableSequencedMap(entries)));
        }
        return new ShardLayout(shards);
    }

    public List<Shard> shards() {
        return shards;
    }

    public boolean isSharded() {
        return shards.size() > 1;
    }

    /** The shard that holds {@code name}. */
    public Shard shardOf(String name) {
        return shards.get(indexOf(name));
    }

    /** The index (in {@link #shards()}) of the shard that holds {@code name}. */
    public int indexOf(String name) {
        Integer k = indexOf.get(name);
        if (k == null) {
            throw new IllegalArgumentException("tensor '" + name + "' is not in the layout");
        }
        return k;
    }

    /** A SHA-256 digest of the layout (files, tensors, dtypes, shapes, offsets), naming the plan it writes. */
    public String digest() {
        try {
            java.security.MessageDigest sha = java.security.MessageDigest.getInstance("SHA-256");
            for (Shard shard : shards) {
                sha.update((shard.fileName() + "\n").getBytes(java.nio.charset.StandardCharsets.UTF_8));
                for (SafetensorsHeader.Entry e : shard.entries().values()) {
                    sha.update((e.name() + "\t" + e.dtype() + "\t" + e.shape() + "\t" + e.begin() + "\n").getBytes(java.nio.charset.StandardCharsets.UTF_8));
                }
            }
            return java.util.HexFormat.of().formatHex(sha.digest());
        } catch (java.security.NoSuchAlgorithmException e) {
            throw new IllegalStateException(e);
        }
    }

    public long totalBytes() {
        return shards.stream().mapToLong(Shard::dataBytes).sum();
    }

    public int tensorCount() {
        return indexOf.size();
    }
}
