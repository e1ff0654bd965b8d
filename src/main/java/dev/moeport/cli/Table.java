package dev.moeport.cli;

import java.io.PrintWriter;
import java.util.ArrayList;
import java.util.List;

/** A plain-text table: columns padded to their widest cell; columns named with a leading '>' are right-aligned. */
final class Table {
    private final String[] header;
    private final List<String[]> rows = new ArrayList<>();

    Table(String... header) {
        this.header = header;
    }

    void add(Object... cells) {
        String[] row = new String[header.length];
        for (int i = 0; i < row.length; i++) {
            row[i] = i < cells.length && cells[i] != null ? cells[i].toString() : "";
        }
        rows.add(row);
    }

    void print(PrintWriter out) {
        int[] width = new int[header.length];
        boolean[] right = new boolean[header.length];
        String[] titles = new String[header.length];
        for (int i = 0; i < header.length; i++) {
            right[i] = header[i].startsWith(">");
            titles[i] = right[i] ? header[i].substring(1) : header[i];
            width[i] = titles[i].length();
        }
        for (String[] row : rows) {
            for (int i = 0; i < row.length; i++) {
                width[i] = Math.max(width[i], row[i].length());
            }
        }
        printRow(out, titles, width, right);
        for (String[] row : rows) {
            printRow(out, row, width, right);
        }
    }

    private static void printRow(PrintWriter out, String[] cells, int[] width, boolean[] right) {
        StringBuilder line = new StringBuilder();
        for (int i = 0; i < cells.length; i++) {
            if (i > 0) {
                line.append("  ");
            }
            String pad = " ".repeat(width[i] - cells[i].length());
            line.append(right[i] ? pad + cells[i] : i == cells.length - 1 ? cells[i] : cells[i] + pad);
        }
        out.println(line);
    }
}
