package dev.moeport.util;

import java.util.Locale;
import java.util.regex.Matcher;
import java.util.regex.Pattern;

/** Byte counts as people write them: decimal units ({@code 5GB} = 5,000,000,000 bytes) as Hugging Face does, binary with {@code i}. */
public final class Sizes {
    private static final Pattern SIZE = Pattern.compile("(\\d+(?:\\.\\d+)?)\\s*([KMGTP]?)(I?)B?", Pattern.CASE_INSENSITIVE);

    private Sizes() {}

    /** Parses {@code 500MB}, {@code 5GB}, {@code 2GiB}, {@code 1000000} (bytes). */
    public static long parse(String text) {
        Matcher m = SIZE.matcher(text.trim());
        if (!m.matches()) {
            throw new IllegalArgumentException("not a size: '" + text + "' (write e.g. 500MB, 5GB, 2GiB or a number of bytes)");
        }
        String unit = m.group(2).toUpperCase(Locale.ROOT);
        int power = unit.isEmpty() ? 0 : "KMGTP".indexOf(unit) + 1;
        if (!m.group(3).isEmpty() && power == 0) {
            throw new IllegalArgumentException("not a size: '" + text + "'");
        }
        double base = m.group(3).isEmpty() ? 1000 : 1024;
        double bytes = Double.parseDouble(m.group(1)) * Math.pow(base, power);
        if (bytes < 1 || bytes > Long.MAX_VALUE) {
            throw new IllegalArgumentException("size out of range: '" + text + "'");
        }
        return (long) bytes;
    }

    /** {@code 11.2 MB}: decimal units, three significant digits. */
    public static String format(long bytes) {
        if (bytes < 1000) {
            return bytes + " B";
        }
        String[] units = {"kB", "MB", "GB", "TB", "PB", "EB"};
        double value = bytes;
        int unit = -1;
        while (value >= 999.95 && unit < units.length - 1) {
            value /= 1000;
            unit++;
        }
        return String.format(Locale.ROOT, value >= 100 ? "%.0f %s" : value >= 10 ? "%.1f %s" : "%.2f %s", value, units[unit]);
    }

    /** {@code 2.31 GB/s}. */
    public static String rate(double bytesPerSecond) {
        return format((long) bytesPerSecond) + "/s";
    }
}
