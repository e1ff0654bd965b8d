package dev.moeport.verify;

import dev.moeport.MoeportException;
import dev.moeport.arch.Architecture;
import dev.moeport.arch.Architectures;
import dev.moeport.arch.ModelConfig;
import dev.moeport.convert.ExportMapper;
import dev.moeport.convert.HfLayout;
import dev.moeport.convert.MappedTensor;
import dev.moeport.convert.McoreLayout;
import dev.moeport.convert.QuantizedCheckpoint;
import dev.moeport.format.Checkpoint;
import dev.moeport.quant.QuantKernel;
import dev.moeport.tensor.DType;
import dev.moeport.tensor.Tensor;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.SequencedMap;

/**
 * A checkpoint seen under Hugging Face names, whatever its layout, for comparing: a Megatron-Core
 * checkpoint through the export mapping, quantized modules decoded (to f32).
 *
 * @param tensors HF name -> how to read it
 * @param dropped input tensors the view leaves out (quantizer state, unmapped)
 * @param quantized modules decoded from a quantized format
 */
public record CheckpointView(Path path, String layout, SequencedMap<String, MappedTensor> tensors, List<String> dropped,
                             List<String> quantized) {

    /** The config.json of a checkpoint's folder, or null. */
    public static Path configBeside(Path checkpoint) {
        Path folder = Files.isDirectory(checkpoint) ? checkpoint : checkpoint.toAbsolutePath().getParent();
        return Files.exists(folder.resolve(ModelConfig.FILE_NAME)) ? folder : null;
    }

    /**
     * @param config the HF config that maps an MCore checkpoint and names an HF one's fused experts (may be
     *     null for an HF checkpoint, which is then compared by its own names)
     */
    public static CheckpointView of(Path path, Checkpoint checkpoint, ModelConfig config, QuantKernel kernel) {
        SequencedMap<String, MappedTensor> tensors = new LinkedHashMap<>();
        if (McoreLayout.isMcore(checkpoint.tensors().keySet())) {
            if (config == null) {
                throw new MoeportException(path + ": a Megatron-Core checkpoint; give --hf-config (the Hugging Face folder of the architecture) to map its names");
            }
            Architecture arch = Architectures.detect(config);
            McoreLayout.Canonical canonical = McoreLayout.normalize(checkpoint);
            ExportMapper.Result mapped = ExportMapper.map(arch, arch.textConfig(config), canonical.tensors(), path);
            mapped.tensors().forEach(t -> tensors.put(t.name(), t));
            List<String> dropped = new java.util.ArrayList<>(canonical.quantizerState().keySet());
            dropped.addAll(canonical.dropped());
            dropped.addAll(mapped.unmapped());
            return new CheckpointView(path, "megatron-core (" + arch.name() + ")", tensors, dropped, List.of());
        }
        Path folder = Files.isDirectory(path) ? path : path.toAbsolutePath().getParent();
        QuantizedCheckpoint.Decoded decoded = QuantizedCheckpoint.decode(checkpoint.tensors(), QuantizedCheckpoint.declaredFormat(folder),
                DType.F32, kernel);
        // Fused experts are compared expert by expert, under the per-expert names.
        Architecture arch = config == null ? null : Architectures.find(config);
        var perExpert = arch != null ? HfLayout.toPerExpert(arch, decoded.tensors()) : decoded.tensors();
        perExpert.forEach((name, t) -> tensors.put(name, MappedTensor.identity(name, t)));
        return new CheckpointView(path, decoded.modules().isEmpty() ? "hugging face" : "hugging face, " + decoded.format().cliName(),
                tensors, List.of(), decoded.modules());
    }

    /**
     * This view without a multimodal wrapper's tensors outside its language model (left out, not compared): a
     * Megatron-Core checkpoint of the language model has none to compare them with.
     */
    public CheckpointView languageModelOnly(Architecture arch) {
        SequencedMap<String, MappedTensor> kept = new LinkedHashMap<>();
        List<String> left = new java.util.ArrayList<>(dropped);
        tensors.forEach((name, t) -> {
            if (arch.carries(name)) {
                left.add(name);
            } else {
                kept.put(name, t);
            }
        });
        return new CheckpointView(path, layout, kept, left, quantized);
    }
}
