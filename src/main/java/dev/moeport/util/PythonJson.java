package dev.moeport.util;

import com.fasterxml.jackson.databind.JsonNode;
import java.math.BigDecimal;
import java.math.MathContext;
import java.math.RoundingMode;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.Map;

/**
 * JSON text as Python's {@code json.dumps(obj, indent=N, sort_keys=...)} writes it, the form of the
 * {@code config.json} that transformers saves ({@code PretrainedConfig.to_json_string}: indent 2,
 * sorted keys): {@code "key": value}, one item a line, {@code []} and {@code {}} for empty ones,
 * non-ASCII escaped ({@code ensure_ascii}), and floats as Python's {@code repr} writes them
 * ({@code 1e-05}, {@code 1.0}, {@code 1e+16}, {@code Infinity}, {@code NaN}).
 */
public final class PythonJson {
    private PythonJson() {}

    public static String dumps(JsonNode node, int indent, boolean sortKeys) {
        StringBuilder out = new StringBuilder();
        write(out, node, indent, sortKeys, 0);
        return out.toString();
    }

    private static void write(StringBuilder out, JsonNode node, int indent, boolean sortKeys, int depth) {
        if (node.isObject()) {
            List<Map.Entry<String, JsonNode>> fields = new ArrayList<>(node.properties());
            if (sortKeys) {
                fields.sort(Map.Entry.comparingByKey(PythonJson::compareCodePoints));
            }
            if (fields.isEmpty()) {
                out.append("{}");
                return;
            }
            out.append('{');
            for (int i = 0; i < fields.size(); i++) {
                newline(out, indent, depth + 1);
                string(out, fields.get(i).getKey());
                out.append(": ");
                write(out, fields.get(i).getValue(), indent, sortKeys, depth + 1);
                if (i + 1 < fields.size()) {
                    out.append(',');
                }
            }
            newline(out, indent, depth);
            out.append('}');
        } else if (node.isArray()) {
            if (node.isEmpty()) {
                out.append("[]");
                return;
            }
            out.append('[');
            for (Iterator<JsonNode> it = node.elements(); it.hasNext(); ) {
                newline(out, indent, depth + 1);
                write(out, it.next(), indent, sortKeys, depth + 1);
                if (it.hasNext()) {
                    out.append(',');
                }
            }
            newline(out, indent, depth);
            out.append(']');
        } else if (node.isTextual()) {
            string(out, node.textValue());
        } else if (node.isFloatingPointNumber()) {
            out.append(node.isBigDecimal() ? floatRepr(node.decimalValue().doubleValue()) : floatRepr(node.doubleValue()));
        } else if (node.isNumber()) {
            out.append(node.bigIntegerValue());
        } else if (node.isBoolean()) {
            out.append(node.booleanValue() ? "true" : "false");
        } else if (node.isNull() || node.isMissingNode()) {
            out.append("null");
        } else {
            throw new IllegalArgumentException("no JSON form for a " + node.getNodeType() + " node");
        }
    }

    private static void newline(StringBuilder out, int indent, int depth) {
        out.append('\n').append(" ".repeat(indent * depth));
    }

    /** Python sorts str keys by code point; Java's String order is by UTF-16 unit, which differs above U+FFFF. */
    private static int compareCodePoints(String a, String b) {
        return java.util.Arrays.compare(a.codePoints().toArray(), b.codePoints().toArray());
    }

    /** A string as json.dumps writes it with ensure_ascii: printable ASCII as is, the rest escaped. */
    private static void string(StringBuilder out, String s) {
        out.append('"');
        for (int i = 0; i < s.length(); i++) {
            char c = s.charAt(i);
            switch (c) {
                case '"' -> out.append("\\\"");
                case '\\' -> out.append("\\\\");
                case '\n' -> out.append("\\n");
                case '\r' -> out.append("\\r");
                case '\t' -> out.append("\\t");
                case '\b' -> out.append("\\b");
                case '\f' -> out.append("\\f");
                default -> {
                    if (c >= ' ' && c <= '~') {
                        out.append(c);
                    } else {
                        out.append(String.format("\\u%04x", (int) c)); // UTF-16 units: astral characters as surrogate pairs, as Python does
                    }
                }
            }
        }
        out.append('"');
    }

    /**
     * Python's {@code repr} of a float: the shortest digits that read back to the same double (as
     * Java's {@code Double.toString} finds them since JDK 19, but for the case below), positional when the decimal exponent
     * lies in [-4, 16), else scientific with a signed exponent of at least two digits.
     */
    public static String floatRepr(double value) {
        if (Double.isNaN(value)) {
            return "NaN";
        }
        if (Double.isInfinite(value)) {
            return value > 0 ? "Infinity" : "-Infinity";
        }
        if (value == 0) {
            return (1 / value < 0) ? "-0.0" : "0.0";
        }
        BigDecimal shortest = new BigDecimal(Double.toString(Math.abs(value))).stripTrailingZeros();
        // Java writes two digits where one would do (its spec takes the closest of one or two digits,
        // e.g. 4.9E-324); Python writes the one.
        BigDecimal oneDigit = shortest.round(new MathContext(1, RoundingMode.HALF_EVEN));
        if (shortest.precision() == 2 && oneDigit.doubleValue() == Math.abs(value)) {
            shortest = oneDigit.stripTrailingZeros();
        }
        String digits = shortest.unscaledValue().toString();
        int exponent = digits.length() - shortest.scale() - 1; // of the first digit: d.ddd x 10^exponent
        String sign = value < 0 ? "-" : "";
        if (exponent < -4 || exponent >= 16) {
            String mantissa = digits.length() == 1 ? digits : digits.charAt(0) + "." + digits.substring(1);
            return sign + mantissa + "e" + (exponent < 0 ? "-" : "+") + String.format("%02d", Math.abs(exponent));
        }
        if (exponent < 0) {
            return sign + "0." + "0".repeat(-exponent - 1) + digits;
        }
        if (digits.length() <= exponent + 1) {
            return sign + digits + "0".repeat(exponent + 1 - digits.length()) + ".0";
        }
        return sign + digits.substring(0, exponent + 1) + "." + digits.substring(exponent + 1);
    }
}
