package dev.moeport.cli;

import dev.moeport.MoeportException;
import dev.moeport.arch.Architecture;
import dev.moeport.convert.McoreLayout;
import dev.moeport.convert.QuantizedCheckpoint;
import dev.moeport.format.Checkpoint;
import java.nio.file.Path;
import java.util.Collection;
import java.util.List;

/** Checks of an input that must be an unquantized Hugging Face checkpoint (quantize, convert). */
final class HfInputs {
    private HfInputs() {}

    static void requireHfUnquantized(Path in, Checkpoint checkpoint) {
        if (McoreLayout.isMcore(checkpoint.tensors().keySet())) {
            throw new MoeportException(in + ": a Megatron-Core checkpoint; this command reads Hugging Face ones (see export)");
        }
        String marker = QuantizedCheckpoint.quantizedMarker(checkpoint.tensors().keySet());
        if (marker != null) {
            throw new MoeportException(in + ": already quantized (it holds " + marker + "); dequantize it first (moeport dequantize)");
        }
    }

    /**
     * The summary's line on the tensors of a multimodal wrapper outside its language model among {@code names}
     * ({@code what}: "copied unquantized"), or none.
     */
    static List<String> outsideLanguageModel(Architecture arch, Collection<String> names, String what) {
        long count = names.stream().filter(arch::carries).count();
        return count == 0 ? List.of() : List.of(what + ": " + count + " tensor(s) of " + arch.wrapper().hfClass() + " outside its language model ("
                + arch.wrapper().carriedList() + ")");
    }
}
