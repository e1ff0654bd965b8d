package dev.moeport.cli;

import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.fasterxml.jackson.databind.SerializationFeature;
import com.fasterxml.jackson.databind.node.ObjectNode;
import java.io.PrintWriter;
import java.nio.file.Path;

/**
 * JSON printed for scripts (--json): indented, one document per command, every one opening with the
 * same fields: {@code schema} (the version of this layout), {@code command}, {@code ok}; a failure
 * is a document too, with {@code ok: false}, {@code exit_code} and {@code error}. Paths are absolute.
 */
final class Json {
    /** Raised when a field changes meaning or goes; new fields may come without it. */
    static final int SCHEMA = 1;
    static final ObjectMapper MAPPER = new ObjectMapper().enable(SerializationFeature.INDENT_OUTPUT);

    /** The command being run (one at a time in a process), set by Main before it runs. */
    private static volatile String command = "moeport";

    private Json() {}

    static void command(String name) {
        command = name;
    }

    /** A new document with the common fields of a successful run; the command adds its own. */
    static ObjectNode document() {
        ObjectNode root = MAPPER.createObjectNode();
        root.put("schema", SCHEMA);
        root.put("command", command);
        root.put("ok", true);
        return root;
    }

    /** The document of a failed run: what stderr says, and the exit code the process ends with. */
    static void printError(PrintWriter out, int exitCode, String message) {
        ObjectNode root = document();
        root.put("ok", false);
        root.put("exit_code", exitCode);
        root.put("error", message);
        print(out, root);
    }

    static String path(Path p) {
        return p.toAbsolutePath().normalize().toString();
    }

    static void print(PrintWriter out, JsonNode node) {
        try {
            out.println(MAPPER.writeValueAsString(node));
        } catch (JsonProcessingException e) {
            throw new IllegalStateException(e);
        }
        out.flush();
    }
}
