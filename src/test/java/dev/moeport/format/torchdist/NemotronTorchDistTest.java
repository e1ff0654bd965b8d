package dev.moeport.format.torchdist;

import static dev.moeport.format.torchdist.TorchDistFixtures.assertSameTensor;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.moeport.format.Checkpoint;
import dev.moeport.format.Checkpoints;
import dev.moeport.format.safetensors.SafetensorsCheckpoint;
import dev.moeport.tensor.Tensor;
import dev.moeport.testing.Shared;
import java.lang.foreign.Arena;
import java.util.Set;
import java.util.TreeSet;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import org.junit.jupiter.api.Test;

/**
 * The torch_dist copy of the shared NemotronH mcore_te fixture, in Megatron's save layout
 * ({@code latest_checkpointed_iteration.txt}, {@code iter_0000001/}) and with Megatron's keys.
 */
class NemotronTorchDistTest {
    /** Every tensor of mcore_te is there, expert e of a stacked expert weight as a zero-copy select(e). */
    @Test
    void holdsTheTensorsOfMcoreTe() {
        Pattern perExpert = Pattern.compile("(.*\\.mlp\\.experts\\.linear_fc[12]\\.weight)(\\d+)");
        try (Checkpoint ckpt = Checkpoints.open(TorchDistFixtures.fixture("nemotron_h_tiny"));
                Checkpoint mcore = Checkpoints.open(Shared.fixture("nemotron_h_tiny/mcore_te"));
                SafetensorsCheckpoint expected = TorchDistFixtures.expected("nemotron_h_tiny");
                Arena arena = Arena.ofConfined()) {
            Set<String> presented = new TreeSet<>();
            for (Tensor want : mcore.tensors().values()) {
                Matcher m = perExpert.matcher(want.name());
                if (m.matches()) {
                    Tensor expert = ckpt.tensor(m.group(1)).select(Long.parseLong(m.group(2)), want.name());
                    assertSameTensor(want, expert, arena);
                    assertTrue(expert.bytes(arena).isMapped(), "an expert of its own chunk is a slice of the file: " + want.name());
                    presented.add(m.group(1));
                } else {
                    assertSameTensor(want, ckpt.tensor(want.name()), arena);
                    presented.add(want.name());
                }
            }
            assertEquals(presented, new TreeSet<>(ckpt.tensors().keySet()));
            assertEquals(TorchDistFixtures.expectedSkipped(expected), new TreeSet<>(ckpt.skipped().keySet()));
        }
    }
}
