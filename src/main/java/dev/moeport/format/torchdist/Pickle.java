package dev.moeport.format.torchdist;

import dev.moeport.MoeportException;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteBuffer;
import java.nio.ByteOrder;
import java.nio.charset.CharacterCodingException;
import java.nio.charset.CodingErrorAction;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.List;
import java.util.Set;

/**
 * A small pickle machine (protocols 2 to 5) for the pickles of PyTorch checkpoints, which are
 * untrusted input. It runs only the opcodes those pickles use and never calls anything: a global is
 * looked up in an allow-list and kept as a name, REDUCE and NEWOBJ become {@link Call} and
 * {@link Instance} records that the caller interprets. Python values become String, Long, Double,
 * Boolean, {@link #NONE}, {@link Tuple}, {@link PyList} and {@link Dict}. No step recurses, and the
 * stack and memo grow by at most one entry an opcode, so hostile input costs time and memory in
 * proportion to its size and then fails with a {@link MoeportException}.
 */
final class Pickle {
    /** Python's None. */
    static final Object NONE = new Object() {
        @Override
        public String toString() {
            return "None";
        }
    };

    /** A module-level name the pickle refers to, e.g. {@code torch.bfloat16}. */
    record Global(String module, String name) {
        @Override
        public String toString() {
            return module + "." + name;
        }
    }

    // The containers print as their kind only: a value may be cyclic or exponentially shared, and
    // a record's generated toString would recurse through it.

    record Tuple(List<Object> items) {
        @Override
        public String toString() {
            return kind(this);
        }

        Object get(int i) {
            return items.get(i);
        }

        int size() {
            return items.size();
        }
    }

    record PyList(List<Object> items) {
        @Override
        public String toString() {
            return kind(this);
        }
    }

    /** A dict in insertion order; keys are not hashed, so a hostile key cannot make lookups recurse. */
    record Dict(List<Object> keys, List<Object> values) {
        @Override
        public String toString() {
            return kind(this);
        }

        /** The value of a string key, or null when absent. */
        Object get(String key) {
            for (int i = 0; i < keys.size(); i++) {
                if (key.equals(keys.get(i))) {
                    return values.get(i);
                }
            }
            return null;
        }
    }

    /** {@code callable(*args)} as REDUCE asked for it; nothing was called. */
    record Call(Global callable, Tuple args) {
        @Override
        public String toString() {
            return kind(this);
        }
    }

    /** {@code cls.__new__(cls, *args)} from NEWOBJ, with the state BUILD gave it (null: none). */
    static final class Instance {
        final Global type;
        final Tuple args;
        Object state;

        Instance(Global type, Tuple args) {
            this.type = type;
            this.args = args;
        }

        @Override
        public String toString() {
            return kind(this);
        }
    }

    /** The tuple a BINPERSID opcode named: PyTorch uses it to point at a tensor's storage. */
    record PersistentId(Object id) {
        @Override
        public String toString() {
            return kind(this);
        }
    }

    private static final int MAX_LINE = 1024;
    private static final int MAX_STACK = 1 << 24;
    private static final Object MARK = new Object();

    private final MemorySegment data;
    private final String where;
    private final Set<Global> allowed;
    private final boolean persistentIds;
    private final List<Object> stack = new ArrayList<>();
    private final List<Integer> marks = new ArrayList<>();
    private final List<Object> memo = new ArrayList<>();
    private long pos;

    private Pickle(MemorySegment data, String where, Set<Global> allowed, boolean persistentIds) {
        this.data = data;
        this.where = where;
        this.allowed = allowed;
        this.persistentIds = persistentIds;
    }

    /**
     * Runs the pickle in {@code data}, refusing every global not in {@code allowed}, and returns
     * what STOP leaves. {@code where} names the source in error messages.
     */
    static Object load(MemorySegment data, String where, Set<Global> allowed, boolean persistentIds) {
        return new Pickle(data, where, allowed, persistentIds).run();
    }

    /** Deeper nesting than any configuration holds; bounds the recursion of {@link #plain}. */
    private static final int MAX_PLAIN_DEPTH = 64;
    /**
     * More values than any common state holds. Memo references let a few kilobytes of pickle name
     * the same list exponentially often ("billion laughs"); {@link #plain} expands them, so it counts.
     */
    private static final int MAX_PLAIN_VALUES = 1 << 20;

    /**
     * A pickled value made only of Python builtins, as plain Java values: dicts become ordered
     * {@code Map}s, lists and tuples {@code List}s, None {@code null}; strings, integers (Long), floats
     * (Double) and bools stay. Anything else (an object, a call, a tensor) is refused: {@code where} and
     * {@code what} name it.
     */
    static Object plain(Object value, String where, String what) {
        return new Plain(where, what).of(value, 0);
    }

    private static final class Plain {
        private final String where;
        private final String what;
        private int values;

        Plain(String where, String what) {
            this.where = where;
            this.what = what;
        }

        Object of(Object value, int depth) {
            if (depth > MAX_PLAIN_DEPTH) {
                throw new MoeportException(where + ": " + what + " is nested deeper than " + MAX_PLAIN_DEPTH + " levels");
            }
            if (++values > MAX_PLAIN_VALUES) {
                throw new MoeportException(where + ": " + what + " holds more than " + MAX_PLAIN_VALUES + " values");
            }
            return switch (value) {
                case String s -> s;
                case Long l -> l;
                case Double d -> d;
                case Boolean b -> b;
                case Tuple t -> list(t.items(), depth);
                case PyList l -> list(l.items(), depth);
                case Dict d -> {
                    java.util.Map<Object, Object> map = new java.util.LinkedHashMap<>();
                    for (int i = 0; i < d.keys().size(); i++) {
                        map.put(of(d.keys().get(i), depth + 1), of(d.values().get(i), depth + 1));
                    }
                    yield java.util.Collections.unmodifiableMap(map);
                }
                default -> {
                    if (value == NONE) {
                        yield null;
                    }
                    throw new MoeportException(where + ": " + what + " holds " + kind(value) + ", not plain Python data");
                }
            };
        }

        private List<Object> list(List<Object> items, int depth) {
            List<Object> list = new ArrayList<>(items.size());
            for (Object item : items) {
                list.add(of(item, depth + 1));
            }
            return java.util.Collections.unmodifiableList(list);
        }
    }

    /** A short name of a decoded value's kind, never its (possibly huge or cyclic) contents. */
    static String kind(Object value) {
        return switch (value) {
            case String s -> "a string";
            case Long l -> "an integer";
            case Double d -> "a float";
            case Boolean b -> "a bool";
            case Tuple t -> "a tuple";
            case PyList l -> "a list";
            case Dict d -> "a dict";
            case Global g -> "the global " + g;
            case Call c -> "a call of " + c.callable();
            case Instance i -> "a " + i.type;
            case PersistentId p -> "a persistent id";
            default -> value == NONE ? "None" : "an unknown value";
        };
    }

    private Object run() {
        while (true) {
            long at = pos;
            int op = u8();
            switch (op) {
                case 0x80 -> { // PROTO
                    int protocol = u8();
                    if (protocol < 2 || protocol > 5) {
                        throw fail(at, "pickle protocol " + protocol + " is not supported (2 to 5 are)");
                    }
                }
                case 0x95 -> { // FRAME: a length hint; the opcodes inside are read as usual
                    long length = i64();
                    if (length < 0 || length > data.byteSize() - pos) {
                        throw fail(at, "frame of " + Long.toUnsignedString(length) + " bytes runs past the end");
                    }
                }
                case '.' -> { // STOP
                    if (stack.size() != 1 || !marks.isEmpty()) {
                        throw fail(at, "STOP with " + stack.size() + " values on the stack");
                    }
                    return stack.getFirst();
                }
                case '(' -> { // MARK
                    marks.add(stack.size());
                    push(MARK, at);
                }
                case ')' -> push(new Tuple(List.of()), at); // EMPTY_TUPLE
                case ']' -> push(new PyList(new ArrayList<>()), at); // EMPTY_LIST
                case '}' -> push(new Dict(new ArrayList<>(), new ArrayList<>()), at); // EMPTY_DICT
                case 't' -> push(new Tuple(popToMark(at)), at); // TUPLE
                case 0x85, 0x86, 0x87 -> { // TUPLE1, TUPLE2, TUPLE3
                    int n = op - 0x84;
                    Object[] items = new Object[n];
                    for (int i = n - 1; i >= 0; i--) {
                        items[i] = pop(at);
                    }
                    push(new Tuple(Arrays.asList(items)), at);
                }
                case 'a' -> { // APPEND
                    Object item = pop(at);
                    list(peek(at), at).add(item);
                }
                case 'e' -> { // APPENDS
                    List<Object> items = popToMark(at);
                    list(peek(at), at).addAll(items);
                }
                case 's' -> { // SETITEM
                    Object value = pop(at);
                    Object key = pop(at);
                    Dict dict = dict(peek(at), at);
                    dict.keys.add(key);
                    dict.values.add(value);
                }
                case 'u' -> { // SETITEMS
                    List<Object> items = popToMark(at);
                    if (items.size() % 2 != 0) {
                        throw fail(at, "SETITEMS with an odd number of values");
                    }
                    Dict dict = dict(peek(at), at);
                    for (int i = 0; i < items.size(); i += 2) {
                        dict.keys.add(items.get(i));
                        dict.values.add(items.get(i + 1));
                    }
                }
                case 'N' -> push(NONE, at);
                case 0x88 -> push(Boolean.TRUE, at); // NEWTRUE
                case 0x89 -> push(Boolean.FALSE, at); // NEWFALSE
                case 'J' -> push((long) i32(), at); // BININT
                case 'K' -> push((long) u8(), at); // BININT1
                case 'M' -> push((long) u16(), at); // BININT2
                case 0x8a -> push(long1(at), at); // LONG1
                case 'G' -> push(Double.longBitsToDouble(Long.reverseBytes(i64())), at); // BINFLOAT (big-endian)
                case 0x8c -> push(string(u8(), at), at); // SHORT_BINUNICODE
                case 'X' -> push(string(u32(), at), at); // BINUNICODE
                case 0x94 -> memo.add(peek(at)); // MEMOIZE
                case 'q' -> put(u8(), at); // BINPUT
                case 'r' -> put(u32(), at); // LONG_BINPUT
                case 'h' -> push(get(u8(), at), at); // BINGET
                case 'j' -> push(get(u32(), at), at); // LONG_BINGET
                case 'c' -> push(global(line(at), line(at), at), at); // GLOBAL
                case 0x93 -> { // STACK_GLOBAL
                    Object name = pop(at);
                    Object module = pop(at);
                    if (!(module instanceof String m) || !(name instanceof String n)) {
                        throw fail(at, "STACK_GLOBAL of values that are not strings");
                    }
                    push(global(m, n, at), at);
                }
                case 'R' -> { // REDUCE
                    Tuple args = tuple(pop(at), at);
                    push(new Call(callable(pop(at), at), args), at);
                }
                case 0x81 -> { // NEWOBJ
                    Tuple args = tuple(pop(at), at);
                    push(new Instance(callable(pop(at), at), args), at);
                }
                case 'b' -> { // BUILD
                    Object state = pop(at);
                    if (!(peek(at) instanceof Instance instance) || instance.state != null) {
                        throw fail(at, "BUILD on something other than a new object");
                    }
                    instance.state = state;
                }
                case 'Q' -> { // BINPERSID
                    if (!persistentIds) {
                        throw fail(at, "persistent ids are not allowed here");
                    }
                    push(new PersistentId(pop(at)), at);
                }
                default -> throw fail(at, String.format("opcode 0x%02x is not supported", op));
            }
        }
    }

    private Global global(String module, String name, long at) {
        Global g = new Global(module, name);
        if (!allowed.contains(g)) {
            throw fail(at, "refuses global '" + printable(module) + "." + printable(name)
                    + "' (only the classes of a PyTorch checkpoint are allowed)");
        }
        return g;
    }

    private Global callable(Object value, long at) {
        if (value instanceof Global g) {
            return g;
        }
        throw fail(at, "calls something that is not a global");
    }

    private void push(Object value, long at) {
        if (stack.size() >= MAX_STACK) {
            throw fail(at, "stack deeper than " + MAX_STACK + " values");
        }
        stack.add(value);
    }

    private Object pop(long at) {
        Object value = peek(at);
        stack.removeLast();
        return value;
    }

    private Object peek(long at) {
        int top = stack.size() - 1;
        if (top < 0 || stack.get(top) == MARK) {
            throw fail(at, "stack underflow");
        }
        return stack.get(top);
    }

    private List<Object> popToMark(long at) {
        if (marks.isEmpty()) {
            throw fail(at, "no mark on the stack");
        }
        int mark = marks.removeLast();
        List<Object> items = new ArrayList<>(stack.subList(mark + 1, stack.size()));
        stack.subList(mark, stack.size()).clear();
        return items;
    }

    private void put(long index, long at) {
        Object value = peek(at);
        if (index < memo.size()) {
            memo.set((int) index, value);
        } else if (index == memo.size()) {
            memo.add(value);
        } else {
            // picklers number memo entries in order; a gap would only serve to allocate a huge table
            throw fail(at, "memo index " + index + " skips ahead of " + memo.size() + " entries");
        }
    }

    private Object get(long index, long at) {
        if (index >= memo.size()) {
            throw fail(at, "memo index " + index + " was never stored");
        }
        return memo.get((int) index);
    }

    private List<Object> list(Object value, long at) {
        if (value instanceof PyList l) {
            return l.items;
        }
        throw fail(at, "APPEND to something that is not a list");
    }

    private Dict dict(Object value, long at) {
        if (value instanceof Dict d) {
            return d;
        }
        throw fail(at, "SETITEM on something that is not a dict");
    }

    private Tuple tuple(Object value, long at) {
        if (value instanceof Tuple t) {
            return t;
        }
        throw fail(at, "arguments that are not a tuple");
    }

    private long long1(long at) {
        int n = u8();
        if (n > 8) {
            throw fail(at, "integer of " + n + " bytes is too large");
        }
        byte[] b = bytes(n, at);
        long v = 0;
        for (int i = n - 1; i >= 0; i--) {
            v = (v << 8) | (b[i] & 0xff);
        }
        return n == 0 ? 0 : v << (64 - 8 * n) >> (64 - 8 * n); // sign-extend from the top byte
    }

    private String string(long length, long at) {
        try {
            return StandardCharsets.UTF_8.newDecoder()
                    .onMalformedInput(CodingErrorAction.REPORT)
                    .onUnmappableCharacter(CodingErrorAction.REPORT)
                    .decode(ByteBuffer.wrap(bytes(length, at)))
                    .toString();
        } catch (CharacterCodingException e) {
            throw fail(at, "string that is not valid UTF-8");
        }
    }

    private String line(long at) {
        StringBuilder s = new StringBuilder();
        while (true) {
            int c = u8();
            if (c == '\n') {
                return s.toString();
            }
            if (c < 0x20 || c > 0x7e || s.length() >= MAX_LINE) {
                throw fail(at, "GLOBAL name that is not a short line of printable ASCII");
            }
            s.append((char) c);
        }
    }

    private byte[] bytes(long n, long at) {
        if (n < 0 || n > data.byteSize() - pos) {
            throw fail(at, "ends inside a value of " + Long.toUnsignedString(n) + " bytes");
        }
        byte[] b = data.asSlice(pos, n).toArray(ValueLayout.JAVA_BYTE);
        pos += n;
        return b;
    }

    private int u8() {
        need(1);
        return data.get(ValueLayout.JAVA_BYTE, pos++) & 0xff;
    }

    private int u16() {
        need(2);
        int v = data.get(ValueLayout.JAVA_SHORT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN), pos) & 0xffff;
        pos += 2;
        return v;
    }

    private int i32() {
        need(4);
        int v = data.get(ValueLayout.JAVA_INT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN), pos);
        pos += 4;
        return v;
    }

    private long u32() {
        return i32() & 0xffffffffL;
    }

    private long i64() {
        need(8);
        long v = data.get(ValueLayout.JAVA_LONG_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN), pos);
        pos += 8;
        return v;
    }

    private void need(int n) {
        if (data.byteSize() - pos < n) {
            throw new MoeportException(where + ": pickle ends early, at byte " + data.byteSize() + " (truncated?)");
        }
    }

    private MoeportException fail(long at, String message) {
        return new MoeportException(where + ": pickle " + message + ", at byte " + at);
    }

    private static String printable(String s) {
        String cut = s.length() > 80 ? s.substring(0, 80) + "..." : s;
        return cut.replaceAll("[^\\x20-\\x7e]", "?");
    }
}
