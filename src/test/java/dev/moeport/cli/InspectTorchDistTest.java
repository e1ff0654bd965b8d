package dev.moeport.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import java.nio.file.Path;
import org.junit.jupiter.api.Test;

class InspectTorchDistTest {
    private static final String EXPERTS_TP = Path.of("fixtures/torch_dist/experts_tp").toAbsolutePath().toString();

    @Test
    void listsPerLayerTensorsAndCountsTheSkippedEntries() {
        CliRun r = CliRun.of("inspect", EXPERTS_TP);
        assertEquals(0, r.code(), r.err());
        assertTrue(r.out().startsWith(EXPERTS_TP + ": torch_dist, 5 tensors"), r.out());
        assertTrue(r.out().matches("(?s).*decoder\\.layers\\.3\\.mlp\\.experts\\.linear_fc1\\.weight\\s+BF16\\s+\\[4, 16, 12\\].*"), r.out());
        assertTrue(r.out().contains("skipped: 9 entries that are not model tensors (extra state (unreadable) 4, optimizer state 1, rng state 4)"),
                r.out());
    }

    @Test
    void jsonListsTheSkippedEntriesWithTheirReason() throws Exception {
        CliRun r = CliRun.of("inspect", EXPERTS_TP, "--json");
        assertEquals(0, r.code(), r.err());
        JsonNode json = new ObjectMapper().readTree(r.out());
        assertEquals("torch_dist", json.get("format").asText());
        assertEquals(9, json.get("skipped").size());
        assertEquals("rng state", json.get("skipped").get("rng_state/shard_2_4").asText());
        assertEquals("optimizer state", json.get("skipped").get("optimizer.state.exp_avg.decoder.layers.3.mlp.router.weight").asText());
    }
}
