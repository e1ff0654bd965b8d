package dev.moeport.convert;

import dev.moeport.arch.Architecture;
import dev.moeport.arch.ModelConfig;
import dev.moeport.format.torchdist.TorchDistWriter;
import dev.moeport.tensor.Shape;
import java.util.HashMap;
import java.util.HashSet;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.SequencedMap;
import java.util.Set;
import java.util.TreeMap;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/** How import's Megatron-Core tensors go into a torch_dist checkpoint: keys, layer stacking, chunks. */
public final class TorchDistOutput {
    private static final Pattern LAYER = Pattern.compile("decoder\\.layers\\.(\\d+)\\.(.*)");

    private TorchDistOutput() {}

    /**
     * @param tensors the import's tensors (per-layer names, experts stacked {@code [E, out, in]})
     * @param layerKeys {@code auto} (stacked when every layer holds the same tensors), {@code stacked} or {@code per-layer}
     * @param sections the tensors saved by row section ({@link #sections})
     */
    /**
     * The MCore tensors of a model that Megatron-Core's torch_dist holds by row section (its rows'
     * {@link dev.moeport.arch.Rule#torchDistSplit}), by name, with the sections' rows.
     */
    public static Map<String, SequencedMap<String, Long>> sections(Architecture arch, ModelConfig config) {
        Map<String, SequencedMap<String, Long>> sections = new HashMap<>();
        for (RuleInstance instance : RuleInstance.enumerate(arch, config)) {
            if (!instance.rule().torchDistSections().isEmpty()) {
                sections.put(instance.mcore().getFirst().getFirst(), instance.rule().torchDistRows(config));
            }
        }
        return sections;
    }

    public static Conversion.Writer writer(java.util.List<MappedTensor> tensors, MegatronSpec spec, String layerKeys,
                                           Map<String, SequencedMap<String, Long>> sections) {
        Map<String, Shape> shapes = new LinkedHashMap<>();
        Set<String> gated = new HashSet<>();
        for (MappedTensor t : tensors) {
            shapes.put(t.name(), t.shape());
            // [gate ; up] rows come from two sources per expert (or per MLP): Megatron saves them as two chunks.
            long experts = t.rank() == 3 ? t.shape().dim(0) : 1;
            if (t.name().endsWith("linear_fc1.weight") && t.sources().size() == 2 * experts) {
                gated.add(t.name());
            }
        }
        Map<Long, Map<String, Shape>> layers = new TreeMap<>();
        shapes.forEach((name, shape) -> {
            Matcher m = LAYER.matcher(name);
            if (m.matches()) {
                layers.computeIfAbsent(Long.parseLong(m.group(1)), k -> new TreeMap<>()).put(m.group(2), shape);
            }
        });
        boolean homogeneous = layers.values().stream().distinct().count() <= 1;
        boolean stack = switch (layerKeys) {
            case "stacked" -> true;
            case "per-layer" -> false;
            default -> homogeneous;
        };
        if (stack && !homogeneous) {
            throw new dev.moeport.MoeportException("--layer-keys stacked: the layers do not all hold the same tensors "
                    + "(dense and MoE layers, say); Megatron-Core keys such models per layer");
        }
        long layerCount = layers.isEmpty() ? 0 : layers.keySet().stream().mapToLong(Long::longValue).max().getAsLong() + 1;
        TorchDistWriter.Naming naming = new TorchDistWriter.Naming(stack, layerCount, Set.copyOf(gated),
                TorchDistWriter.Naming.linearsOf(shapes), spec.namer(shapes.keySet()), sections);
        return new Conversion.Writer() {
            @Override
            public dev.moeport.format.TensorOutput create(java.nio.file.Path out, java.nio.file.Path destination, dev.moeport.plan.Plan plan,
                    java.util.function.IntPredicate shards, boolean fsync, boolean writeBehind, dev.moeport.format.TensorOutput.FinishedFile finished) {
                return TorchDistWriter.create(out, destination, plan.layout(), naming, shards, fsync, writeBehind, finished);
            }

            @Override
            public String file(dev.moeport.plan.Plan plan, int shard) {
                return TorchDistWriter.dataFile(shard);
            }
        };
    }
}
