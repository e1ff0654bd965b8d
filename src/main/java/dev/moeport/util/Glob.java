package dev.moeport.util;

import java.util.List;
import java.util.regex.Pattern;

/**
 * A shell-like pattern over tensor or module names: {@code *} matches any run of characters (dots
 * included), {@code ?} any one character, {@code [qkv]} one of the listed characters; everything else
 * is literal. {@code *experts.3.*} matches every tensor of expert 3, {@code *.[qkvo]_proj} the
 * attention projections.
 */
public record Glob(String text, Pattern pattern) {

    public static Glob of(String text) {
        StringBuilder regex = new StringBuilder();
        for (int i = 0; i < text.length(); i++) {
            char c = text.charAt(i);
            int close = c == '[' ? text.indexOf(']', i + 2) : -1;
            if (close > 0) {
                regex.append('[');
                text.substring(i + 1, close).chars().forEach(k -> regex.append(Pattern.quote(Character.toString(k))));
                regex.append(']');
                i = close;
                continue;
            }
            switch (c) {
                case '*' -> regex.append(".*");
                case '?' -> regex.append('.');
                default -> regex.append(Pattern.quote(String.valueOf(c)));
            }
        }
        return new Glob(text, Pattern.compile(regex.toString(), Pattern.DOTALL));
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
