package dev.moeport.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.moeport.testing.Shared;
import org.junit.jupiter.api.Test;

class InspectCommandTest {
    private static final String HF = Shared.fixture("nemotron_h_tiny/hf").toString();

    @Test
    void listsTheSeventyOneTensorsOfTheFixture() {
        CliRun r = CliRun.of("inspect", HF);
        assertEquals(0, r.code(), r.err());
        assertTrue(r.out().contains("total: 71 tensors, 6.00 MB (5997440 bytes); BF16 71"), r.out());
        assertEquals(1 + 1 + 71 + 1, r.out().lines().count(), "title, header, 71 rows, total");
        assertTrue(r.out().contains("backbone.layers.0.mixer.in_proj.weight"), r.out());
        // natural order: layer 2's experts 0..7 before layer 5
        assertTrue(r.out().indexOf("layers.2.mixer.experts.7.") < r.out().indexOf("layers.5.mixer.experts.0."));
    }

    @Test
    void groupsLayerAndExpertNumbers() {
        CliRun r = CliRun.of("inspect", HF, "--group");
        assertEquals(0, r.code(), r.err());
        assertTrue(r.out().matches("(?s).*backbone\\.layers\\.\\{2,5\\}\\.mixer\\.experts\\.\\{0\\.\\.7\\}\\.up_proj\\.weight\\s+x16\\s+BF16\\s+\\[128, 256\\].*"), r.out());
    }

    @Test
    void groupsTeGroupedExpertNumbersToo() {
        CliRun r = CliRun.of("inspect", Shared.fixture("nemotron_h_tiny/mcore_te").toString(), "--group");
        assertEquals(0, r.code(), r.err());
        assertTrue(r.out().matches("(?s).*decoder\\.layers\\.\\{2,5\\}\\.mlp\\.experts\\.linear_fc1\\.weight\\{0\\.\\.7\\}\\s+x16\\s.*"), r.out());
    }

    @Test
    void filtersAndPrintsJson() throws Exception {
        CliRun r = CliRun.of("inspect", HF, "--filter", "*experts.3.*", "--json");
        assertEquals(0, r.code(), r.err());
        JsonNode json = new ObjectMapper().readTree(r.out());
        assertEquals(4, json.get("tensor_count").asInt());
        assertEquals(4 * 128 * 256 * 2, json.get("total_bytes").asLong());
        JsonNode first = json.get("tensors").get(0);
        assertEquals("backbone.layers.2.mixer.experts.3.down_proj.weight", first.get("name").asText());
        assertEquals("[256,128]", first.get("shape").toString());
        assertEquals("model-00002-of-00004.safetensors", first.get("file").asText());
    }

    @Test
    void exitCodes() {
        CliRun missing = CliRun.of("inspect", "/definitely/not/here");
        assertEquals(1, missing.code());
        assertEquals("moeport: error: /definitely/not/here: no such file or folder", missing.err().strip());
        assertEquals(2, CliRun.of("inspect").code());
        assertEquals(2, CliRun.of("inspect", HF, "--no-such-option").code());
        assertEquals(2, CliRun.of().code());
        assertEquals(0, CliRun.of("--version").code());
        CliRun help = CliRun.of("--help");
        assertEquals(0, help.code());
        assertTrue(help.out().contains("inspect"));
    }

    @Test
    void controlCharactersInNamesAreEscaped(@org.junit.jupiter.api.io.TempDir java.nio.file.Path dir) throws Exception {
        // issue 17 item 7: a name holding ESC [ 2 J (clear screen) went to the terminal raw; JSON escapes it by itself
        java.nio.file.Path file = dev.moeport.testing.RawSafetensors.write(dir.resolve("x.safetensors"),
                "{\"a\\u001b[2Jb\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]}}", 1);
        CliRun r = CliRun.of("inspect", file.toString());
        assertEquals(0, r.code(), r.err());
        assertTrue(r.out().contains("a\\x1b[2Jb "), r.out());
        assertTrue(r.out().chars().noneMatch(c -> c == 0x1b), r.out());
    }
}
