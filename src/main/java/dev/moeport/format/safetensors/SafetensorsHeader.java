package dev.moeport.format.safetensors;

import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.core.JsonToken;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.moeport.MoeportException;
import dev.moeport.tensor.DType;
import dev.moeport.tensor.Shape;
import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.ByteBuffer;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.SequencedMap;

/**
 * The JSON header of a safetensors file, parsed and checked against the size of the data buffer that
 * follows it: every tensor's byte range must match its dtype and shape, and the ranges must tile the
 * buffer exactly (no overlap, no hole, nothing left over).
 */
public record SafetensorsHeader(Map<String, String> metadata, List<Entry> entries) {

    /** Headers larger than this are refused, as the reference implementation does. */
    public static final long MAX_HEADER_BYTES = 100_000_000L;

    private static final String METADATA_KEY = "__metadata__";

    private static final ObjectMapper JSON =
            new ObjectMapper().enable(JsonParser.Feature.STRICT_DUPLICATE_DETECTION)
            .enable(com.fasterxml.jackson.databind.DeserializationFeature.FAIL_ON_TRAILING_TOKENS);

    /** Reads one value of the header's object, the parser standing after it. */
    private static final com.fasterxml.jackson.databind.ObjectReader ONE_VALUE =
            JSON.reader().without(com.fasterxml.jackson.databind.DeserializationFeature.FAIL_ON_TRAILING_TOKENS);

    /** One tensor: {@code begin} and {@code end} are byte offsets into the data buffer. */
    public record Entry(String name, DType dtype, Shape shape, long begin, long end) {
        public long byteSize() {
            return end - begin;
        }
    }

    /**
     * Parses the header bytes of {@code file}, whose data buffer (what follows the header) holds
     * {@code dataSize} bytes. Entries come back sorted by offset.
     */
    public static SafetensorsHeader parse(Path file, ByteBuffer headerBytes, long dataSize) {
        String text;
        try {
            text = StandardCharsets.UTF_8.newDecoder()
                    .onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT)
                    .decode(headerBytes)
                    .toString();
        } catch (CharacterCodingException e) {
            throw fail(file, "header is not valid UTF-8");
        }
        // Streamed one tensor at a time: a tree of the whole header takes ~30 times its size (a
        // 69 MB header of 10^6 tensors needed 2.2 GB), the entries only what they hold.
        Map<String, String> metadata = new LinkedHashMap<>();
        List<Entry> entries = new ArrayList<>();
        try (JsonParser parser = JSON.createParser(text)) {
            if (parser.nextToken() != JsonToken.START_OBJECT) {
                throw fail(file, "header is not a JSON object");
            }
            while (parser.nextToken() == JsonToken.FIELD_NAME) {
                String name = parser.currentName();
                parser.nextToken();
                JsonNode value = ONE_VALUE.readTree(parser);
                if (name.equals(METADATA_KEY)) {
                    metadata = parseMetadata(file, value);
                } else {
                    entries.add(parseEntry(file, name, value));
                }
            }
            if (parser.nextToken() != null) {
                throw fail(file, "header is not valid JSON (trailing content after the object)");
            }
        } catch (JsonProcessingException e) {
            throw fail(file, "header is not valid JSON (" + e.getOriginalMessage() + ")");
        } catch (IOException e) {
            throw new UncheckedIOException(e); // parsing a String does no I/O
        }
        entries.sort(Comparator.comparingLong(Entry::begin).thenComparingLong(Entry::end));
        checkTiling(file, entries, dataSize);
        return new SafetensorsHeader(metadata, List.copyOf(entries));
    }

    private static Map<String, String> parseMetadata(Path file, JsonNode node) {
        if (!node.isObject()) {
            throw fail(file, "__metadata__ is not a map of strings");
        }
        Map<String, String> metadata = new LinkedHashMap<>();
        for (Map.Entry<String, JsonNode> e : node.properties()) {
            if (!e.getValue().isTextual()) {
                throw fail(file, "__metadata__ is not a map of strings (value of '" + e.getKey() + "' is "
                        + e.getValue().getNodeType().toString().toLowerCase(java.util.Locale.ROOT) + ")");
            }
            metadata.put(e.getKey(), e.getValue().textValue());
        }
        return metadata;
    }

    private static Entry parseEntry(Path file, String name, JsonNode node) {
        if (!node.isObject()) {
            throw fail(file, "tensor '" + name + "': entry is not a JSON object");
        }
        JsonNode dtypeNode = node.get("dtype");
        if (dtypeNode == null || !dtypeNode.isTextual()) {
            throw fail(file, "tensor '" + name + "': missing or non-string \"dtype\"");
        }
        DType dtype = DType.fromName(dtypeNode.textValue());
        if (dtype == null) {
            throw fail(file, "tensor '" + name + "': unknown dtype '" + dtypeNode.textValue() + "'");
        }
        long[] dims = nonNegativeLongs(file, name, node.get("shape"), "shape", -1);
        long[] offsets = nonNegativeLongs(file, name, node.get("data_offsets"), "data_offsets", 2);
        Shape shape = Shape.of(dims);
        long numel = shape.numel();
        long expected = numel < 0 ? -1 : dtype.byteSize(numel);
        if (expected < 0) {
            throw fail(file, "tensor '" + name + "': " + dtype + shape
                    + (numel < 0 ? " has too many elements" : " does not end on a byte boundary"));
        }
        if (offsets[1] < offsets[0]) {
            throw fail(file, "tensor '" + name + "': data_offsets [" + offsets[0] + ", " + offsets[1] + "] end before they begin");
        }
        if (offsets[1] - offsets[0] != expected) {
            throw fail(file, "tensor '" + name + "': data_offsets [" + offsets[0] + ", " + offsets[1] + "] hold "
                    + (offsets[1] - offsets[0]) + " bytes but " + dtype + shape + " needs " + expected);
        }
        return new Entry(name, dtype, shape, offsets[0], offsets[1]);
    }

    private static long[] nonNegativeLongs(Path file, String name, JsonNode node, String field, int requiredLength) {
        String what = requiredLength < 0 ? "a list of non-negative integers" : "a list of " + requiredLength + " non-negative integers";
        if (node == null || !node.isArray() || (requiredLength >= 0 && node.size() != requiredLength)) {
            throw fail(file, "tensor '" + name + "': \"" + field + "\" is not " + what);
        }
        long[] values = new long[node.size()];
        for (int i = 0; i < values.length; i++) {
            JsonNode v = node.get(i);
            if (!v.isIntegralNumber() || !v.canConvertToLong() || v.longValue() < 0) {
                throw fail(file, "tensor '" + name + "': \"" + field + "\" is not " + what + " (found " + v + ")");
            }
            values[i] = v.longValue();
        }
        return values;
    }

    private static void checkTiling(Path file, List<Entry> sorted, long dataSize) {
        long expectedBegin = 0;
        Entry previous = null;
        for (Entry e : sorted) {
            if (e.end > dataSize) {
                throw fail(file, "tensor '" + e.name + "': data_offsets [" + e.begin + ", " + e.end
                        + "] lie outside the data buffer of " + dataSize + " bytes");
            }
            if (e.begin < expectedBegin) {
                throw fail(file, "tensor '" + e.name + "' overlaps tensor '" + previous.name + "' (bytes " + e.begin
                        + " to " + expectedBegin + ")");
            }
            if (e.begin > expectedBegin) {
                throw fail(file, "hole of " + (e.begin - expectedBegin) + " bytes before tensor '" + e.name
                        + "' (bytes " + expectedBegin + " to " + e.begin + " belong to no tensor)");
            }
            expectedBegin = e.end;
            previous = e;
        }
        if (expectedBegin != dataSize) {
            throw fail(file, "the tensors cover " + expectedBegin + " bytes of the " + dataSize
                    + "-byte data buffer; the rest belongs to no tensor");
        }
    }

    /** Compact JSON of a header for these entries, padded with spaces to a multiple of 8 bytes. */
    public static byte[] encode(Map<String, String> metadata, SequencedMap<String, Entry> entries) {
        ObjectNode root = JSON.createObjectNode();
        if (!metadata.isEmpty()) {
            ObjectNode meta = root.putObject(METADATA_KEY);
            metadata.forEach(meta::put);
        }
        for (Entry e : entries.values()) {
            ObjectNode node = root.putObject(e.name());
            node.put("dtype", e.dtype().name());
            var shape = node.putArray("shape");
            for (long d : e.shape().toArray()) {
                shape.add(d);
            }
            node.putArray("data_offsets").add(e.begin()).add(e.end());
        }
        byte[] json;
        try {
            json = JSON.writeValueAsBytes(root);
        } catch (JsonProcessingException e) {
            throw new IllegalStateException(e);
        }
        int padded = (json.length + 7) & ~7;
        byte[] out = java.util.Arrays.copyOf(json, padded);
        java.util.Arrays.fill(out, json.length, padded, (byte) ' ');
        return out;
    }

    static MoeportException fail(Path file, String message) {
        return new MoeportException(file + ": " + message);
    }
}
