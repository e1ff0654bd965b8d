package dev.moeport.util;

import java.util.Comparator;

/** Orders names with their digit runs compared as numbers: {@code layers.2} before {@code layers.10}. */
public final class NaturalOrder implements Comparator<String> {
    public static final NaturalOrder INSTANCE = new NaturalOrder();

    private NaturalOrder() {}

    @Override
    public int compare(String a, String b) {
        int i = 0;
        int j = 0;
        while (i < a.length() && j < b.length()) {
            char ca = a.charAt(i);
            char cb = b.charAt(j);
            if (Character.isDigit(ca) && Character.isDigit(cb)) {
                int ei = i;
                while (ei < a.length() && Character.isDigit(a.charAt(ei))) ei++;
                int ej = j;
                while (ej < b.length() && Character.isDigit(b.charAt(ej))) ej++;
                // Leading zeros skipped (one digit kept), then the longer run is the larger number, else the first differing digit.
                int si = i;
                while (si < ei - 1 && a.charAt(si) == '0') si++;
                int sj = j;
                while (sj < ej - 1 && b.charAt(sj) == '0') sj++;
                if (ei - si != ej - sj) {
                    return Integer.compare(ei - si, ej - sj);
                }
                for (int k = 0; k < ei - si; k++) {
                    if (a.charAt(si + k) != b.charAt(sj + k)) {
                        return Character.compare(a.charAt(si + k), b.charAt(sj + k));
                    }
                }
                i = ei;
                j = ej;
            } else {
                if (ca != cb) {
                    return Character.compare(ca, cb);
                }
                i++;
                j++;
            }
        }
        return Integer.compare(a.length() - i, b.length() - j);
    }
}
