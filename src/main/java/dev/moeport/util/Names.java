package dev.moeport.util;

/** Text taken from input files (tensor names, keys) made safe to print on a terminal. */
public final class Names {
    private Names() {}

    /**
     * {@code s} with its control characters (C0, DEL, C1: what terminal escape sequences are made of)
     * written as {@code \xNN}; everything else, non-ASCII letters included, as it is.
     */
    public static String escaped(String s) {
        int i = 0;
        while (i < s.length() && !isControl(s.charAt(i))) {
            i++;
        }
        if (i == s.length()) {
            return s;
        }
        StringBuilder b = new StringBuilder(s.length() + 8).append(s, 0, i);
        for (; i < s.length(); i++) {
            char c = s.charAt(i);
            if (isControl(c)) {
                b.append(String.format("\\x%02x", (int) c));
            } else {
                b.append(c);
            }
        }
        return b.toString();
    }

    private static boolean isControl(char c) {
        return c < 0x20 || (c >= 0x7f && c <= 0x9f);
    }
}
