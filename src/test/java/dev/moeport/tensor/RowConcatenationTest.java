package dev.moeport.tensor;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.moeport.MoeportException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.util.List;
import org.junit.jupiter.api.Test;

/** Sections of rows read as one tensor: every row range and row is the one of the rows laid end to end. */
class RowConcatenationTest {
    private static final int COLS = 3;

    /** Rows {@code [first, first + rows)} of the whole, as a U8 tensor whose row r holds r*10, r*10+1, r*10+2. */
    private static TensorView section(String name, int first, int rows) {
        byte[] bytes = new byte[rows * COLS];
        for (int r = 0; r < rows; r++) {
            for (int c = 0; c < COLS; c++) {
                bytes[r * COLS + c] = (byte) ((first + r) * 10 + c);
            }
        }
        return new TensorView(name, DType.U8, Shape.of(rows, COLS), MemorySegment.ofArray(bytes), null);
    }

    /** What rows {@code [start, start + count)} of the whole hold, computed on its own. */
    private static byte[] expectedRows(int start, int count) {
        return section("expected", start, count).data().toArray(ValueLayout.JAVA_BYTE);
    }

    private static final TensorView X = section("in_proj.weight.x", 4, 2);
    private static final RowConcatenation WHOLE = new RowConcatenation("in_proj.weight",
            List.of(section("in_proj.weight.z", 0, 4), X, section("in_proj.weight.dt", 6, 3)));

    @Test
    void isTheSectionsEndToEnd() {
        assertEquals(Shape.of(9, COLS), WHOLE.shape());
        assertEquals(DType.U8, WHOLE.dtype());
        try (Arena arena = Arena.ofConfined()) {
            assertArrayEquals(expectedRows(0, 9), WHOLE.bytes(arena).toArray(ValueLayout.JAVA_BYTE));
        }
        assertEquals("join 3 sections", WHOLE.transform());
    }

    @Test
    void everyRowRangeHoldsItsRows() {
        try (Arena arena = Arena.ofConfined()) {
            for (int start = 0; start <= 9; start++) {
                for (int count = 0; start + count <= 9; count++) {
                    Tensor range = WHOLE.narrow(start, count, "r");
                    assertEquals(Shape.of(count, COLS), range.shape());
                    assertArrayEquals(expectedRows(start, count), range.bytes(arena).toArray(ValueLayout.JAVA_BYTE), start + "+" + count);
                }
            }
        }
    }

    @Test
    void aRangeWithinOneSectionIsThatSectionsOwnSlice() {
        Tensor inX = WHOLE.narrow(4, 2, "x");
        assertTrue(inX instanceof TensorView, "no copy within one section: " + inX);
        try (Arena arena = Arena.ofConfined()) {
            assertSame(X.data().heapBase().orElseThrow(), inX.bytes(arena).heapBase().orElseThrow());
        }
    }

    @Test
    void everyRowIsItsRow() {
        try (Arena arena = Arena.ofConfined()) {
            for (int r = 0; r < 9; r++) {
                Tensor row = WHOLE.select(r, "row");
                assertEquals(Shape.of(COLS), row.shape());
                assertArrayEquals(expectedRows(r, 1), row.bytes(arena).toArray(ValueLayout.JAVA_BYTE), "row " + r);
            }
        }
        assertThrows(MoeportException.class, () -> WHOLE.select(9, "row"));
        assertThrows(MoeportException.class, () -> WHOLE.narrow(8, 2, "r"));
    }

    @Test
    void sectionsThatDifferInMoreThanRowsAreRefusedInOneLine() {
        TensorView wide = new TensorView("in_proj.weight.x", DType.U8, Shape.of(2, COLS + 1), MemorySegment.ofArray(new byte[2 * (COLS + 1)]), null);
        MoeportException e = assertThrows(MoeportException.class,
                () -> new RowConcatenation("in_proj.weight", List.of(section("in_proj.weight.z", 0, 4), wide)));
        assertTrue(e.getMessage().contains("in_proj.weight.x") && e.getMessage().contains("differ in rows only"), e.getMessage());
        assertEquals(1, e.getMessage().lines().count());
        TensorView bf16 = new TensorView("in_proj.weight.x", DType.BF16, Shape.of(2, 1), MemorySegment.ofArray(new byte[4]), null);
        assertThrows(MoeportException.class, () -> new RowConcatenation("in_proj.weight",
                List.of(new TensorView("z", DType.U8, Shape.of(2, 1), MemorySegment.ofArray(new byte[2]), null), bf16)));
    }
}
