package dev.moeport.util;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

class GlobAndSizesTest {
    @Test
    void globsMatchWholeNames() {
        assertTrue(Glob.of("*experts.3.*").matches("backbone.layers.2.mixer.experts.3.up_proj.weight"));
        assertFalse(Glob.of("*experts.3.*").matches("backbone.layers.2.mixer.experts.13.up_proj.weight"));
        assertTrue(Glob.of("*.mixer.[qkvo]_proj").matches("backbone.layers.1.mixer.k_proj"));
        assertFalse(Glob.of("*.mixer.[qkvo]_proj").matches("backbone.layers.1.mixer.up_proj"));
        assertTrue(Glob.of("lm_hea?").matches("lm_head"));
        assertTrue(Glob.of("a.b(c)+").matches("a.b(c)+"), "regex characters are literal");
        assertTrue(Glob.of("x[").matches("x["), "an unclosed bracket is literal");
    }

    /**
     * Each pattern with the names of {@link #NAMES} that CPython 3.11's {@code fnmatch.fnmatchcase}
     * matches (computed there, copied here): sets, ranges, negation, literal brackets and dashes.
     */
    private static final List<String> NAMES = List.of("m.layers.2.w", "m.layers.4.w", "m.k_proj", "m.q_proj", "]x", "ax", "b", "d", "-",
            "e", "c", "a", "z", "/", ".", "a-b", "x[", "x[!", "\\", "m.experts.25.w", "m.experts.45.w", "^", "\n");

    @Test
    void globsFollowPythonsFnmatch() {
        Map<String, List<String>> expected = new LinkedHashMap<>();
        expected.put("*.layers.[0-3].*", List.of("m.layers.2.w"));
        expected.put("*.[!q]_proj", List.of("m.k_proj"));
        expected.put("[]]x", List.of("]x"));
        expected.put("[!]]x", List.of("ax"));
        expected.put("[a-c-e]", List.of("b", "-", "e", "c", "a"));
        expected.put("[c-a]", List.of());
        expected.put("[!c-a]", List.of("b", "d", "-", "e", "c", "a", "z", "/", ".", "\\", "^", "\n"));
        expected.put("[--0]", List.of("-", "/", "."));
        expected.put("a[-]b", List.of("a-b"));
        expected.put("[a-]", List.of("-", "a"));
        expected.put("x[", List.of("x["));
        expected.put("x[!", List.of("x[!"));
        expected.put("[z-a-]", List.of("-"));
        expected.put("[\\]", List.of("\\"));
        expected.put("*.experts.[1-3][0-9].*", List.of("m.experts.25.w"));
        expected.put("?", List.of("b", "d", "-", "e", "c", "a", "z", "/", ".", "\\", "^", "\n"));
        expected.put("[^a]", List.of("a", "^"));
        expected.forEach((pattern, names) ->
                assertEquals(names, NAMES.stream().filter(Glob.of(pattern)::matches).toList(), pattern));
    }

    @Test
    void sizesAreDecimalUnlessBinary() {
        assertEquals(5_000_000_000L, Sizes.parse("5GB"));
        assertEquals(500_000_000L, Sizes.parse("500MB"));
        assertEquals(2L << 30, Sizes.parse("2GiB"));
        assertEquals(1234, Sizes.parse("1234"));
        assertEquals(1500, Sizes.parse("1.5kB"));
        assertThrows(IllegalArgumentException.class, () -> Sizes.parse("5 GBs"));
        assertThrows(IllegalArgumentException.class, () -> Sizes.parse("0"));
        assertEquals("6.00 MB", Sizes.format(5_997_440));
        assertEquals("999 B", Sizes.format(999));
    }

    @Test
    void naturalOrderComparesNumbersAsNumbers() {
        List<String> names = new ArrayList<>(List.of("layers.10.w", "layers.2.w", "layers.1.w", "layers.02.x"));
        names.sort(NaturalOrder.INSTANCE);
        assertEquals(List.of("layers.1.w", "layers.2.w", "layers.02.x", "layers.10.w"), names);
    }
}
