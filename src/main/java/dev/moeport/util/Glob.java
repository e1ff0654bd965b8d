package dev.moeport.util;

import java.util.ArrayList;
import java.util.List;
import java.util.regex.Pattern;

/**
 * A pattern over tensor or module names with the rules of Python's {@code fnmatch.fnmatchcase}, which
 * Model Optimizer's and llm-compressor's patterns follow: {@code *} matches any run of characters
 * (dots included), {@code ?} any one character, {@code [seq]} one character of the set and
 * {@code [!seq]} one not in it, where {@code a-z} is a range (a reversed range is empty), a leading
 * {@code ]} and a leading or trailing {@code -} are literal, and a {@code [} without its {@code ]} is
 * literal; everything else is literal. {@code *experts.3.*} matches every tensor of expert 3,
 * {@code *.[qkvo]_proj} the attention projections, {@code *.layers.[0-3].*} the first four layers.
 */
public record Glob(String text, Pattern pattern) {

    public static Glob of(String text) {
        StringBuilder regex = new StringBuilder();
        int n = text.length();
        for (int i = 0; i < n; i++) {
            char c = text.charAt(i);
            switch (c) {
                case '*' -> regex.append(".*");
                case '?' -> regex.append('.');
                case '[' -> {
                    // The set ends at the first ']' after an optional '!' and a first character that may be ']'.
                    int j = i + 1;
                    if (j < n && text.charAt(j) == '!') {
                        j++;
                    }
                    if (j < n && text.charAt(j) == ']') {
                        j++;
                    }
                    int close = text.indexOf(']', j);
                    if (close < 0) {
                        regex.append(Pattern.quote("["));
                    } else {
                        regex.append(charSet(text.substring(i + 1, close)));
                        i = close;
                    }
                }
                default -> regex.append(Pattern.quote(String.valueOf(c)));
            }
        }
        return new Glob(text, Pattern.compile(regex.toString(), Pattern.DOTALL));
    }

    /** The regex of the set between the brackets: ranges, then single characters, reversed ranges dropped. */
    private static String charSet(String set) {
        boolean negated = set.startsWith("!");
        String items = negated ? set.substring(1) : set;
        List<int[]> ranges = new ArrayList<>();
        for (int p = 0; p < items.length(); ) {
            char first = items.charAt(p);
            if (p + 2 < items.length() && items.charAt(p + 1) == '-') {
                char last = items.charAt(p + 2);
                if (first <= last) {
                    ranges.add(new int[] {first, last});
                }
                p += 3;
            } else {
                ranges.add(new int[] {first, first});
                p++;
            }
        }
        if (ranges.isEmpty()) {
            return negated ? "." : "(?!)"; // as fnmatch: an empty set never matches, its negation matches anything
        }
        StringBuilder regex = new StringBuilder(negated ? "[^" : "[");
        for (int[] r : ranges) {
            regex.append(String.format("\\x{%x}", r[0]));
            if (r[1] != r[0]) {
                regex.append(String.format("-\\x{%x}", r[1]));
            }
        }
        return regex.append(']').toString();
    }

    public boolean matches(String name) {
        return pattern.matcher(name).matches();
    }

    /** True when any of {@code globs} matches {@code name}. */
    public static boolean anyMatches(List<Glob> globs, String name) {
        for (Glob g : globs) {
            if (g.matches(name)) {
                return true;
            }
        }
        return false;
    }

    @Override
    public String toString() {
        return text;
    }
}
