package dev.moeport.util;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.ArrayList;
import java.util.List;
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
