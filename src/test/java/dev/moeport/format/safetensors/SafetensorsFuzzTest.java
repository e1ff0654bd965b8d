package dev.moeport.format.safetensors;

import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;

import dev.moeport.MoeportException;
import dev.moeport.tensor.Tensor;
import dev.moeport.testing.Bytes;
import dev.moeport.testing.RawSafetensors;
import java.io.IOException;
import java.lang.foreign.ValueLayout;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;
import java.util.Random;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.Timeout;
import org.junit.jupiter.api.io.TempDir;

/**
 * Thousands of mutated headers and indexes: each must open into a checkpoint whose every tensor can
 * be read, or fail with moeport's own error; any other exception (or a hang) fails the test.
 */
// A separate thread: a parser stuck in a loop never sees an interrupt, so only this fails the test.
@Timeout(value = 120, threadMode = Timeout.ThreadMode.SEPARATE_THREAD)
class SafetensorsFuzzTest {
    private static final String SEED_HEADER = "{\"__metadata__\":{\"format\":\"pt\"},"
            + "\"model.layers.0.w\":{\"dtype\":\"BF16\",\"shape\":[2,3],\"data_offsets\":[0,12]},"
            + "\"model.layers.1.w\":{\"dtype\":\"F4\",\"shape\":[4,2],\"data_offsets\":[12,16]},"
            + "\"scale\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[16,20]},"
            + "\"e\":{\"dtype\":\"U8\",\"shape\":[0],\"data_offsets\":[20,20]}}";
    private static final String[] TOKENS = {"{", "}", "[", "]", ",", ":", "\"", "-1", "0", "1e400", "18446744073709551616", "null", "true",
        "\"dtype\"", "\"shape\"", "\"data_offsets\"", "\"__metadata__\"", "\"F8_E4M3\"", "\"F4\"", "\\u0000", "\u00e9", "1.5", " ", "\n"};

    @TempDir
    Path dir;

    private int accepted;

    @Test
    void mutatedHeadersGiveAValidCheckpointOrMoeportsError() throws IOException {
        Random random = new Random(20261126);
        Path file = dir.resolve("fuzz.safetensors");
        for (int i = 0; i < 4000; i++) {
            byte[] header = mutate(SEED_HEADER.getBytes(StandardCharsets.UTF_8), random);
            int dataBytes = random.nextInt(8) == 0 ? random.nextInt(40) : 20;
            long declared = random.nextInt(16) == 0 ? header.length + random.nextInt(9) - 4 : header.length;
            RawSafetensors.write(file, declared, header, dataBytes);
            check(file, header);
        }
        assertTrue(accepted > 50, "the fuzzer should also produce valid files, got " + accepted);
    }

    @Test
    void mutatedIndexesGiveAValidCheckpointOrMoeportsError() throws IOException {
        Random random = new Random(7);
        RawSafetensors.write(dir.resolve("a.safetensors"), "{\"x\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}", 4);
        RawSafetensors.write(dir.resolve("b.safetensors"), "{\"y\":{\"dtype\":\"U8\",\"shape\":[4],\"data_offsets\":[0,4]}}", 4);
        String seed = "{\"metadata\":{\"total_size\":8},\"weight_map\":{\"x\":\"a.safetensors\",\"y\":\"b.safetensors\"}}";
        Path index = dir.resolve(SafetensorsCheckpoint.INDEX_NAME);
        for (int i = 0; i < 1500; i++) {
            byte[] text = mutate(seed.getBytes(StandardCharsets.UTF_8), random);
            Files.write(index, text);
            check(dir, text);
        }
    }

    /**
     * The same mutations through the command line, as a user meets them: exit 0 with what the header
     * says (read here by plain Jackson, not by moeport), or exit 1 with one line naming the file and
     * no internal error.
     */
    @Test
    void mutatedHeadersThroughTheCommandLine() throws IOException {
        Random random = new Random(17);
        Path file = dir.resolve("cli.safetensors");
        com.fasterxml.jackson.databind.ObjectMapper json = new com.fasterxml.jackson.databind.ObjectMapper();
        int cliAccepted = 0;
        for (int i = 0; i < 300; i++) {
            byte[] header = mutate(SEED_HEADER.getBytes(StandardCharsets.UTF_8), random);
            RawSafetensors.write(file, header.length, header, 20);
            dev.moeport.cli.CliRun r = dev.moeport.cli.CliRun.of("inspect", "--json", file.toString());
            String input = new String(header, StandardCharsets.UTF_8);
            if (r.code() == 0) {
                cliAccepted++;
                var expected = new java.util.TreeMap<String, Long>();
                json.readTree(header).properties().forEach(e -> {
                    if (!e.getKey().equals("__metadata__")) {
                        var offsets = e.getValue().get("data_offsets");
                        expected.put(e.getKey(), offsets.get(1).asLong() - offsets.get(0).asLong());
                    }
                });
                var actual = new java.util.TreeMap<String, Long>();
                json.readTree(r.out()).get("tensors").forEach(t -> actual.put(t.get("name").asText(), t.get("bytes").asLong()));
                org.junit.jupiter.api.Assertions.assertEquals(expected, actual, input);
            } else {
                org.junit.jupiter.api.Assertions.assertEquals(1, r.code(), input + "\n" + r.err());
                List<String> lines = r.err().lines().toList();
                org.junit.jupiter.api.Assertions.assertEquals(1, lines.size(), input + "\n" + r.err());
                assertTrue(lines.getFirst().startsWith("moeport: error: " + file + ": ") && !lines.getFirst().contains("internal error"),
                        input + "\n" + r.err());
            }
        }
        assertTrue(cliAccepted > 5, "the fuzzer should also produce valid files, got " + cliAccepted);
    }

    private void check(Path path, byte[] input) {
        try (SafetensorsCheckpoint c = SafetensorsCheckpoint.open(path)) {
            for (Tensor t : c.tensors().values()) {
                var data = ((dev.moeport.tensor.TensorView) t).data();
                if (data.byteSize() > 0) {
                    data.get(ValueLayout.JAVA_BYTE, data.byteSize() - 1);
                }
            }
            accepted++;
        } catch (MoeportException expected) {
            // the project's own error: fine
        } catch (RuntimeException | StackOverflowError e) {
            fail("unexpected " + e + " for input: " + new String(input, StandardCharsets.UTF_8), e);
        }
    }

    private static byte[] mutate(byte[] seed, Random random) {
        byte[] b = seed.clone();
        int edits = 1 + random.nextInt(4);
        for (int e = 0; e < edits; e++) {
            int at = b.length == 0 ? 0 : random.nextInt(b.length);
            switch (random.nextInt(6)) {
                case 0 -> { if (b.length > 0) b[at] = (byte) random.nextInt(256); }
                case 1 -> { if (b.length > 0) b[at] = (byte) (b[at] ^ (1 << random.nextInt(8))); }
                case 2 -> b = Bytes.splice(b, at, random.nextInt(Math.min(8, b.length - at) + 1), new byte[0]);
                case 3 -> b = Bytes.splice(b, at, 0, TOKENS[random.nextInt(TOKENS.length)].getBytes(StandardCharsets.UTF_8));
                case 4 -> { // change a number
                    for (int k = at; k < b.length; k++) {
                        if (Character.isDigit(b[k])) {
                            b = Bytes.splice(b, k, 1, Integer.toString(random.nextInt(30)).getBytes(StandardCharsets.UTF_8));
                            break;
                        }
                    }
                }
                default -> b = java.util.Arrays.copyOf(b, at); // truncate
            }
        }
        return b;
    }
}
