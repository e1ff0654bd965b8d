package dev.moeport.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.moeport.testing.Shared;
import java.nio.file.Path;
import java.util.List;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** Every command's --json: the same opening fields, absolute paths, and failures as JSON with unchanged exit codes. */
class JsonSchemaTest {
    private static final Path HF = Shared.fixture("qwen3_moe/hf");

    @TempDir
    Path tmp;

    private static JsonNode json(CliRun r, int code) throws Exception {
        assertEquals(code, r.code(), r.err());
        return new ObjectMapper().readTree(r.out());
    }

    private static void assertCommon(JsonNode doc, String command, boolean ok) {
        assertEquals(1, doc.get("schema").asInt(), doc.toString());
        assertEquals(command, doc.get("command").asText(), doc.toString());
        assertEquals(ok, doc.get("ok").asBoolean(), doc.toString());
    }

    @Test
    void everyCommandOpensWithTheSameFieldsAndAbsolutePaths() throws Exception {
        // A relative path on the command line comes back absolute.
        Path relative = Path.of("").toAbsolutePath().relativize(HF);
        JsonNode inspect = json(CliRun.of("inspect", relative.toString(), "--json"), 0);
        assertCommon(inspect, "inspect", true);
        assertEquals(HF.toString(), inspect.get("path").asText());

        Path out = tmp.resolve("q");
        JsonNode quantize = json(CliRun.of("quantize", "--format", "fp8", "--in", relative.toString(), "--out", out.toString(), "--json"), 0);
        assertCommon(quantize, "quantize", true);
        assertEquals(HF.toString(), quantize.get("input").asText());
        assertEquals(out.toString(), quantize.get("output").asText());

        JsonNode plan = json(CliRun.of("dequantize", "--in", out.toString(), "--out", tmp.resolve("d").toString(), "--dry-run", "--json"), 0);
        assertCommon(plan, "dequantize", true);
        assertTrue(plan.get("dry_run").asBoolean());

        JsonNode verify = json(CliRun.of("verify", relative.toString(), HF.toString(), "--json"), 0);
        assertCommon(verify, "verify", true);
        assertEquals(List.of(HF.toString(), HF.toString()), List.of(verify.get("a").asText(), verify.get("b").asText()));

        JsonNode synth = json(CliRun.of("synth", "--preset", "tiny", "--out", tmp.resolve("s").toString(), "--json"), 0);
        assertCommon(synth, "synth", true);
        assertTrue(synth.get("input").isNull(), "synthesized: nothing read");
    }

    @Test
    void failuresAreJsonTooWithTheirExitCodes() throws Exception {
        CliRun failure = CliRun.of("inspect", tmp.resolve("missing").toString(), "--json");
        JsonNode doc = json(failure, Main.EXIT_FAILURE);
        assertCommon(doc, "inspect", false);
        assertEquals(Main.EXIT_FAILURE, doc.get("exit_code").asInt());
        assertTrue(doc.get("error").asText().contains("no such file or folder"), doc.toString());
        assertTrue(failure.err().startsWith("moeport: error: "), "stderr keeps its line: " + failure.err());

        JsonNode usage = json(CliRun.of("quantize", "--in", HF.toString(), "--json"), Main.EXIT_USAGE);
        assertCommon(usage, "quantize", false);
        assertEquals(Main.EXIT_USAGE, usage.get("exit_code").asInt());
        assertTrue(usage.get("error").asText().contains("--format"), usage.toString());
    }
}
