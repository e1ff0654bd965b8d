package dev.moeport.convert;

import dev.moeport.plan.Piece;
import dev.moeport.tensor.Tensor;
import java.util.ArrayList;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.SequencedMap;

/**
 * A Hugging Face checkpoint as the input of {@code moeport quantize}: every tensor keeps its name, but
 * projections that serving engines fuse into one GEMM share one per-tensor scale (the largest amax of
 * the group, as ModelOpt does): q/k/v of an attention, gate/up of a gated MLP (Mixtral's w1/w3).
 */
public final class HfQuantizeMapper {
    /** Sibling projections, by the last component of their module name. */
    private static final List<List<String>> SIBLINGS = List.of(
            List.of("q_proj", "k_proj", "v_proj"),
            List.of("gate_proj", "up_proj"),
            List.of("w1", "w3"));

    private HfQuantizeMapper() {}

    public static List<MappedTensor> map(SequencedMap<String, Tensor> tensors) {
        Map<String, List<String>> groupOf = new HashMap<>();
        for (String name : tensors.keySet()) {
            for (List<String> siblings : SIBLINGS) {
                String suffix = "." + siblings.getFirst() + ".weight";
                if (name.endsWith(suffix)) {
                    String prefix = name.substring(0, name.length() - suffix.length());
                    List<String> members = siblings.stream().map(s -> prefix + "." + s + ".weight").toList();
                    if (members.stream().allMatch(tensors::containsKey)) {
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
