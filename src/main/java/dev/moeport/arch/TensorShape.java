package dev.moeport.arch;

import dev.moeport.MoeportException;
import dev.moeport.tensor.Shape;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.function.ToLongFunction;

/**
 * The shape a Hugging Face tensor must have, written with config keys: {@code "moe_intermediate_size, hidden_size"}.
 * Each dimension is a sum of products of terms ({@code "2*n_groups*ssm_state_size + mamba_num_heads"}); a term is
 * an integer or a config key, {@code a|b} taking the first key the config has; {@code *} is any size. A dimension
 * whose keys the config lacks is not checked.
 */
public record TensorShape(List<String> dims) {

    /** Sizes every transformer config implies when it leaves them out. */
    private static final Map<String, ToLongFunction<ModelConfig>> DEFAULTS = Map.of(
            "head_dim", c -> c.requireInt("hidden_size") / c.requireInt("num_attention_heads"),
            "num_key_value_heads", c -> c.requireInt("num_attention_heads"));

    public static TensorShape parse(String text) {
        return new TensorShape(Arrays.stream(text.split(",")).map(String::strip).toList());
    }

    /**
     * Sizes of named parts, in order: {@code "q k: linear_num_key_heads*linear_key_head_dim; b a: linear_num_value_heads"}
     * gives q and k the first size, b and a the second; each size is a dimension expression.
     */
    public static Map<String, String> namedSizes(String text) {
        Map<String, String> sizes = new LinkedHashMap<>();
        for (String entry : text.split(";")) {
            String[] kv = entry.split(":");
            for (String name : kv[0].strip().split("\\s+")) {
                sizes.put(name, kv[1].strip());
            }
        }
        return java.util.Collections.unmodifiableMap(sizes);
    }

    /**
     * Refuses {@code actual} unless it matches, in one line naming the tensor, both shapes and the config values
     * that gave the expected one.
     *
     * @param tensor the tensor's name and where it comes from, e.g. {@code model.layers.1.mlp.experts.0.up_proj.weight (from ...)}
     */
    public void check(String tensor, Shape actual, ModelConfig config) {
        List<String> expected = new ArrayList<>();
        Map<String, Long> because = new LinkedHashMap<>();
        boolean matches = actual.rank() == dims.size();
        for (int i = 0; i < dims.size(); i++) {
            Map<String, Long> keys = new LinkedHashMap<>();
            Long size = size(dims.get(i), config, keys);
            expected.add(size == null ? "*" : Long.toString(size));
            if (size != null && (i >= actual.rank() || actual.dim(i) != size)) {
                matches = false;
                because.putAll(keys);
            }
        }
        if (!matches) {
            List<String> values = because.entrySet().stream().map(e -> e.getKey() + " = " + e.getValue()).toList();
            throw new MoeportException(tensor + " has shape " + actual + " but " + config.file() + " implies [" + String.join(", ", expected) + "]"
                    + (values.isEmpty() ? "" : " (" + String.join(", ", values) + ")") + "; the config does not match the checkpoint");
        }
    }

    /** Whether every dimension is known from {@code config} (no {@code *}, no missing key). */
    public boolean resolves(ModelConfig config) {
        return dims.stream().allMatch(d -> size(d, config, new LinkedHashMap<>()) != null);
    }

    /** The size dimension expression {@code dim} gives under {@code config}; refused in one line when the config lacks a key. */
    public static long sizeOf(String dim, ModelConfig config) {
        Long size = size(dim, config, new LinkedHashMap<>());
        if (size == null) {
            throw new MoeportException(config.file() + ": needs the integers of " + dim);
        }
        return size;
    }

    /**
     * The size a dimension expression gives, or null when it is {@code *} or the config lacks a key.
     *
     * @param used receives the keys the size came from, with their values
     */
    private static Long size(String dim, ModelConfig config, Map<String, Long> used) {
        if (dim.equals("*")) {
            return null;
        }
        long sum = 0;
        for (String product : dim.split("\\+")) {
            long value = 1;
            for (String term : product.split("\\*")) {
                Long t = term(term.strip(), config, used);
                if (t == null) {
                    return null;
                }
                value *= t;
            }
            sum += value;
        }
        return sum;
    }

    private static Long term(String term, ModelConfig config, Map<String, Long> used) {
        if (term.chars().allMatch(Character::isDigit)) {
            return Long.parseLong(term);
        }
        for (String key : term.split("\\|")) {
            if (config.has(key)) {
                used.put(key, config.requireInt(key));
                return used.get(key);
            }
        }
        for (String key : term.split("\\|")) {
            ToLongFunction<ModelConfig> fallback = DEFAULTS.get(key);
            if (fallback != null && config.has("num_attention_heads")) {
                used.put(key, fallback.applyAsLong(config));
                return used.get(key);
            }
        }
        return null;
    }
}
