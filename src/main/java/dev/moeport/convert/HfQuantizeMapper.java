package dev.moeport.convert;

import dev.moeport.arch.Architecture;
import dev.moeport.arch.ModelConfig;
import dev.moeport.plan.Piece;
import dev.moeport.tensor.Tensor;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.SequencedMap;

/**
 * A Hugging Face checkpoint as the input of {@code moeport quantize}: every tensor keeps its name, but
 * the projections that one Megatron-Core tensor splits into (q/k/v of a fused QKV, gate and up of a
 * gated fc1) share one per-tensor scale, the largest amax of the group, as serving engines fuse them
 * into one GEMM. The groups come from the architecture's rule table; without a known architecture, from
 * the names transformers' models give such siblings in one module ({@link #SIBLINGS}).
 */
public final class HfQuantizeMapper {
    private HfQuantizeMapper() {}

    /** Projections that engines fuse into one GEMM, by their names in one parent module. */
    private static final List<List<String>> SIBLINGS = List.of(
            List.of("q_proj", "k_proj", "v_proj"), List.of("gate_proj", "up_proj"), List.of("w1", "w3"));

    public static List<MappedTensor> map(Architecture arch, ModelConfig config, SequencedMap<String, Tensor> tensors) {
        Map<String, List<String>> groupOf = new HashMap<>();
        if (arch != null) {
            for (RuleInstance instance : RuleInstance.enumerate(arch, config)) {
                List<String> members = instance.hf();
                if (members.size() > 1 && members.stream().allMatch(tensors::containsKey)) {
                    members.forEach(m -> groupOf.put(m, members));
                }
            }
        } else {
            for (String name : tensors.keySet()) {
                int dot = name.lastIndexOf('.', name.length() - ".weight".length() - 1);
                if (!name.endsWith(".weight") || dot < 0) {
                    continue;
                }
                String parent = name.substring(0, dot + 1);
                String leaf = name.substring(dot + 1, name.length() - ".weight".length());
                for (List<String> siblings : SIBLINGS) {
                    List<String> members = siblings.stream().map(s -> parent + s + ".weight").toList();
                    if (siblings.getFirst().equals(leaf) && members.stream().allMatch(tensors::containsKey)) {
                        members.forEach(m -> groupOf.put(m, members));
                    }
                }
            }
        }
        List<MappedTensor> out = new ArrayList<>();
        for (Map.Entry<String, Tensor> e : tensors.entrySet()) {
            List<String> group = groupOf.get(e.getKey());
            if (group == null) {
                out.add(MappedTensor.identity(e.getKey(), e.getValue()));
            } else {
                Tensor t = e.getValue();
                out.add(new MappedTensor(e.getKey(), t.dtype(), t.shape(), List.of(new Piece.Source(t)), group, String.join("+", group),
                        group.stream().map(n -> (Piece) new Piece.Source(tensors.get(n))).toList(), false));
            }
        }
        return out;
    }
}
