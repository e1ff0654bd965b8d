package dev.moeport.format;

import dev.moeport.MoeportException;
import dev.moeport.format.safetensors.SafetensorsCheckpoint;
import dev.moeport.format.torchdist.TorchDistCheckpoint;
import dev.moeport.io.OutputFolder;
import java.nio.file.Files;
import java.nio.file.Path;

/** Opens a checkpoint in whichever on-disk format {@code path} holds. */
public final class Checkpoints {
    private Checkpoints() {}

    public static Checkpoint open(Path path) {
        if (!Files.exists(path)) {
            throw new MoeportException(path + ": no such file or folder");
        }
        if (!Files.isRegularFile(path) && !Files.isDirectory(path)) {
            // reading a FIFO would wait for a writer forever
            throw new MoeportException(path + ": not a regular file or folder (a pipe or a device?)");
        }
        OutputFolder.finishInterruptedSwitch(path);
        if (TorchDistCheckpoint.recognizes(path)) {
            return TorchDistCheckpoint.open(path);
        }
        if (SafetensorsCheckpoint.recognizes(path)) {
            return SafetensorsCheckpoint.open(path);
        }
        throw new MoeportException(path + ": not a checkpoint moeport reads (expected a .safetensors file, an index, a folder of them, or a torch_dist folder)");
    }
}
