package dev.moeport.util;

import static org.junit.jupiter.api.Assertions.assertEquals;

import com.fasterxml.jackson.databind.ObjectMapper;
import dev.moeport.arch.ModelConfig;
import dev.moeport.cli.CliRun;
import dev.moeport.testing.Shared;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.MethodSource;

class PythonJsonTest {
    @TempDir
    Path tmp;

    /** What CPython 3.11's repr() prints for these floats (computed there, copied here). */
    @Test
    void floatsAreWrittenAsPythonsRepr() {
        for (String repr : List.of("1e-05", "1e-06", "0.0001", "1.0", "0.02", "10000.0", "1e+16", "1000000000000000.0", "123456789012345.6",
                "1.5e-07", "-2.5", "3.14159", "1e+22", "5e-324", "1.7976931348623157e+308", "0.1", "100.0", "1234.5678", "-0.0")) {
            assertEquals(repr, PythonJson.floatRepr(Double.parseDouble(repr)));
        }
        assertEquals("Infinity", PythonJson.floatRepr(Double.POSITIVE_INFINITY));
        assertEquals("NaN", PythonJson.floatRepr(Double.NaN));
    }

    /** json.dumps({"b": [], "a": {"z": "\u00e9\n", "y": {}}, "c": [1, 2.0]}, indent=2, sort_keys=True), from CPython 3.11. */
    @Test
    void structureAndStringsAsJsonDumps() throws Exception {
        var node = new ObjectMapper().readTree("{\"b\": [], \"a\": {\"z\": \"\\u00e9\\n\", \"y\": {}}, \"c\": [1, 2.0]}");
        assertEquals("{\n  \"a\": {\n    \"y\": {},\n    \"z\": \"\\u00e9\\n\"\n  },\n  \"b\": [],\n  \"c\": [\n    1,\n    2.0\n  ]\n}",
                PythonJson.dumps(node, 2, true));
    }

    static Stream<Path> fixtureConfigs() throws Exception {
        try (Stream<Path> fixtures = Files.list(Shared.root().resolve("fixtures"))) {
            return fixtures.map(f -> f.resolve("hf/config.json")).filter(Files::exists).sorted().toList().stream();
        }
    }

    /** transformers wrote these; read and written back unchanged, they give the same bytes. */
    @ParameterizedTest(name = "{0}")
    @MethodSource("fixtureConfigs")
    void anUnchangedConfigIsWrittenBackByteForByte(Path config) throws Exception {
        String text = Files.readString(config);
        assertEquals(text, PythonJson.dumps(ModelConfig.load(config.getParent()).json(), 2, true) + "\n");
    }

    /** quantize adds quantization_config to config.json and changes no other line. */
    @Test
    void quantizeChangesOnlyTheQuantizationConfig() throws Exception {
        Path hf = Shared.fixture("qwen3_moe/hf");
        Path out = CliRun.succeeding("quantize", "--format", "fp8", "--in", hf.toString(), "--out", tmp.resolve("q").toString());
        List<String> written = Files.readAllLines(out.resolve("config.json"));
        int start = written.indexOf("  \"quantization_config\": {");
        int end = written.subList(start, written.size()).indexOf("  },") + start;
        List<String> rest = new java.util.ArrayList<>(written.subList(0, start));
        rest.addAll(written.subList(end + 1, written.size()));
        assertEquals(Files.readAllLines(hf.resolve("config.json")), rest);
    }
}
