package dev.moeport.format.torchdist;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.moeport.MoeportException;
import dev.moeport.format.torchdist.Pickle.Call;
import dev.moeport.format.torchdist.Pickle.Dict;
import dev.moeport.format.torchdist.Pickle.Global;
import dev.moeport.format.torchdist.Pickle.PyList;
import dev.moeport.format.torchdist.Pickle.Tuple;
import java.io.ByteArrayOutputStream;
import java.lang.foreign.MemorySegment;
import java.util.List;
import java.util.Set;
import org.junit.jupiter.api.Test;

class PickleTest {
    private static final Set<Global> TORCH_SIZE = Set.of(new Global("torch", "Size"));

    private static Object load(Object... parts) {
        return Pickle.load(PickleBytes.segment(parts), "test.pkl", TORCH_SIZE, false);
    }

    private static String error(Object... parts) {
        return assertThrows(MoeportException.class, () -> load(parts)).getMessage();
    }

    private static void assertError(String fragment, Object... parts) {
        String message = error(parts);
        assertTrue(message.contains(fragment), message);
    }

    @Test
    void buildsPythonValues() {
        // {'a': [1, -2, 3.5, None, True], 'b': torch.Size((7, 300, 70000)), 'c': the list again (memo)}
        Object value = load(0x80, 4, '}', 0x94, '(',
                0x8c, 1, "a", ']', 0x94, '(', 'K', 1, 'J', 0xfe, 0xff, 0xff, 0xff, 'G', 0x40, 0x0c, 0, 0, 0, 0, 0, 0, 'N', 0x88, 'e',
                0x8c, 1, "b", 0x8c, 5, "torch", 0x8c, 4, "Size", 0x93, 'K', 7, 'M', 0x2c, 0x01, 0x8a, 3, 0x70, 0x11, 0x01, 0x87, 0x85, 'R',
                0x8c, 1, "c", 'h', 1, 'u', '.');
        Dict dict = (Dict) value;
        assertEquals(List.of("a", "b", "c"), dict.keys());
        PyList list = (PyList) dict.get("a");
        assertEquals(List.of(1L, -2L, 3.5, Pickle.NONE, true), list.items());
        Call size = (Call) dict.get("b");
        assertEquals(new Global("torch", "Size"), size.callable());
        assertEquals(List.of(7L, 300L, 70000L), ((Tuple) size.args().get(0)).items());
        assertSame(list, dict.get("c"));
    }

    @Test
    void refusesGlobalsOutsideTheAllowList() {
        assertEquals("test.pkl: pickle refuses global 'os.system' (only the classes of a PyTorch checkpoint are allowed), at byte 2",
                error(0x80, 2, "cos\nsystem\n", 'X', 10, 0, 0, 0, "echo pwned", 0x85, 'R', '.'));
        // protocol 4 spells it STACK_GLOBAL: pickle.dumps(os.system) names 'posix'
        assertError("refuses global 'posix.system'", 0x80, 4, 0x8c, 5, "posix", 0x94, 0x8c, 6, "system", 0x94, 0x93, 0x94, '.');
        assertError("refuses global 'torch.load'", 0x80, 4, 0x8c, 5, "torch", 0x8c, 4, "load", 0x93, '.');
        assertError("refuses global '__builtin__.eval'", 0x80, 2, "c__builtin__\neval\n", '.');
    }

    @Test
    void refusesWhatItDoesNotKnow() {
        assertError("opcode 0x69 is not supported", 0x80, 2, "(i__main__\nX\n."); // INST
        assertError("pickle protocol 1 is not supported", 0x80, 1, 'N', '.');
        assertError("pickle protocol 6 is not supported", 0x80, 6, 'N', '.');
        assertError("integer of 9 bytes is too large", 0x80, 2, 0x8a, 9, 1, 2, 3, 4, 5, 6, 7, 8, 9, '.');
        assertError("persistent ids are not allowed here", 0x80, 2, 'N', 'Q', '.');
        assertError("BUILD on something other than a new object", 0x80, 2, ']', 'N', 'b', '.');
        assertError("arguments that are not a tuple", 0x80, 2, 'N', 'N', 'R', '.');
    }

    @Test
    void refusesBrokenStructure() {
        assertError("stack underflow", 0x80, 2, 'a', '.');
        assertError("no mark on the stack", 0x80, 2, 'N', 't', '.');
        assertError("APPEND to something that is not a list", 0x80, 2, 'N', 'N', 'a', '.');
        assertError("stack underflow", 0x80, 2, '(', 'a', '.');
        assertError("no mark on the stack", 0x80, 2, '}', 'N', 'u', '.');
        assertError("SETITEMS with an odd number of values", 0x80, 2, '}', '(', 'N', 'u', '.');
        assertError("STOP with 2 values on the stack", 0x80, 2, 'N', 'N', '.');
        assertError("STOP with 1 values on the stack", 0x80, 2, '(', '.');
        assertError("memo index 0 was never stored", 0x80, 2, 'h', 0, '.');
        assertError("memo index 2147483647 skips ahead of 0 entries", 0x80, 2, 'N', 'r', 0xff, 0xff, 0xff, 0x7f, '.');
        assertError("calls something that is not a global", 0x80, 2, ')', ')', 0x81, '.');
    }

    @Test
    void refusesTruncatedInputAndHugeLengths() {
        assertEquals("test.pkl: pickle ends early, at byte 3 (truncated?)", error(0x80, 2, 'N'));
        assertEquals("test.pkl: pickle ends inside a value of 4294967295 bytes, at byte 2",
                error(0x80, 2, 'X', 0xff, 0xff, 0xff, 0xff, "abc"));
        assertError("frame of 18446744073709551615 bytes", 0x80, 4, 0x95, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 'N', '.');
        assertError("ends early", 0x80, 2, "ctorch\nSi");
        assertError("string that is not valid UTF-8", 0x80, 2, 0x8c, 2, 0xc3, 0x28, '.');
        assertError("not a short line of printable ASCII", 0x80, 2, 'c', "x".repeat(2000), '\n');
    }

    @Test
    void deepNestingAndCyclesNeitherRecurseNorLoop() {
        ByteArrayOutputStream deep = new ByteArrayOutputStream();
        deep.write(0x80);
        deep.write(2);
        int depth = 200_000;
        for (int i = 0; i < depth; i++) {
            deep.write(']');
        }
        for (int i = 1; i < depth; i++) {
            deep.write('a');
        }
        deep.write('.');
        Object nested = Pickle.load(MemorySegment.ofArray(deep.toByteArray()), "deep.pkl", TORCH_SIZE, false);
        assertTrue(nested instanceof PyList);
        // a list that holds itself, given to the metadata decoder: a clean error, no endless walk
        byte[] cycle = PickleBytes.of(0x80, 2, ']', 'q', 0, 'h', 0, 'a', '.');
        MoeportException e = assertThrows(MoeportException.class, () -> TorchDistMetadata.parse(MemorySegment.ofArray(cycle), "cycle.pkl"));
        assertEquals("cycle.pkl: expected a Metadata or MCoreMetadata, found a list", e.getMessage());
        MoeportException deepError = assertThrows(MoeportException.class,
                () -> TorchDistMetadata.parse(MemorySegment.ofArray(deep.toByteArray()), "deep.pkl"));
        assertTrue(deepError.getMessage().contains("found a list"));
    }

    /** {@code depth} nested one-element tuples around None, and what prints them. */
    private static byte[] deepTuple(int depth) {
        ByteArrayOutputStream b = new ByteArrayOutputStream();
        b.write(0x80);
        b.write(2);
        b.write('N');
        for (int i = 0; i < depth; i++) {
            b.write(0x85); // TUPLE1
        }
        b.write('.');
        return b.toByteArray();
    }

    @Test
    void hostileValuesPrintAsTheirKindOnly() {
        // issue 17: a 3,000-deep tuple and a list holding itself overflowed the stack when a message printed them
        Object deep = Pickle.load(MemorySegment.ofArray(deepTuple(100_000)), "deep.pkl", TORCH_SIZE, false);
        assertEquals("a tuple", deep.toString());
        PyList cycle = (PyList) load(0x80, 2, ']', 'q', 0, 'h', 0, 'a', '.');
        assertSame(cycle, cycle.items().getFirst());
        assertEquals("a list", cycle.toString());
        assertEquals("a call of torch.Size", load(0x80, 2, "ctorch\nSize\n", ')', 'R', '.').toString());
    }

    @Test
    void plainDataIsBoundedInDepthAndInValues() {
        MoeportException deep = assertThrows(MoeportException.class,
                () -> Pickle.plain(Pickle.load(MemorySegment.ofArray(deepTuple(3000)), "deep.pkl", TORCH_SIZE, false), "deep.pkl", "the common state"));
        assertEquals("deep.pkl: the common state is nested deeper than 64 levels", deep.getMessage());
        // "billion laughs": each tuple holds the previous one twice, through the memo; 40 levels name 2^40 values in 200 bytes
        ByteArrayOutputStream laughs = new ByteArrayOutputStream();
        laughs.writeBytes(PickleBytes.of(0x80, 2, ']', 'q', 0));
        for (int i = 1; i <= 40; i++) {
            laughs.writeBytes(PickleBytes.of('h', i - 1, 0x86, 'q', i)); // (top, memo[i-1]) as TUPLE2
        }
        laughs.write('.');
        Object bomb = Pickle.load(MemorySegment.ofArray(laughs.toByteArray()), "laughs.pkl", TORCH_SIZE, false);
        MoeportException e = assertThrows(MoeportException.class, () -> Pickle.plain(bomb, "laughs.pkl", "the common state"));
        assertEquals("laughs.pkl: the common state holds more than 1048576 values", e.getMessage());
        // the same shape ten levels deep is plain data: 2^10 empty lists at the bottom
        Object small = bomb;
        for (int i = 40; i > 10; i--) {
            small = ((Tuple) small).get(0);
        }
        assertEquals(2, ((List<?>) Pickle.plain(small, "laughs.pkl", "x")).size());
    }
}
