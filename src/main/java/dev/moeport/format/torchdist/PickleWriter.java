package dev.moeport.format.torchdist;

import java.io.ByteArrayOutputStream;
import java.nio.charset.StandardCharsets;
import java.util.List;
import java.util.Map;

/**
 * Writes Python pickles (protocol 2) of the few shapes PyTorch's checkpoint files hold: None, booleans,
 * ints, floats, strings, tuples, lists, dicts, globals, calls ({@code REDUCE}), objects rebuilt by
 * {@code NEWOBJ} + {@code BUILD}, and persistent ids. No memo: every value is written where it is used.
 * The {@link Pickle} reader reads back everything this writes.
 */
final class PickleWriter {
    private final ByteArrayOutputStream out = new ByteArrayOutputStream();

    /** A module-level name, as {@code GLOBAL module\nname\n}. */
    record Global(String module, String name) {}

    /** {@code callable(*args)}: REDUCE. */
    record Call(Object callable, List<?> args) {}

    /** {@code cls.__new__(cls)} then {@code __setstate__(state)}: NEWOBJ and BUILD (no BUILD for a null state). */
    record NewObject(Global cls, Object state) {}

    /** A persistent id (BINPERSID), as torch.save names storages. */
    record PersistentId(List<?> id) {}

    /** A Python tuple (a Java list is written as a Python list). */
    record Tuple(List<?> items) {
        static Tuple of(Object... items) {
            return new Tuple(List.of(items));
        }
    }

    static byte[] pickle(Object value) {
        PickleWriter w = new PickleWriter();
        w.out.write(0x80); // PROTO
        w.out.write(2);
        w.value(value);
        w.out.write('.'); // STOP
        return w.out.toByteArray();
    }

    private void value(Object v) {
        switch (v) {
            case null -> out.write('N');
            case Boolean b -> out.write(b ? 0x88 : 0x89);
            case Integer i -> integer(i);
            case Long l -> integer(l);
            case Double d -> {
                out.write('G'); // BINFLOAT, big-endian
                long bits = Double.doubleToLongBits(d);
                for (int s = 56; s >= 0; s -= 8) {
                    out.write((int) (bits >>> s));
                }
            }
            case String s -> {
                byte[] utf8 = s.getBytes(StandardCharsets.UTF_8);
                out.write('X'); // BINUNICODE
                int32(utf8.length);
                out.writeBytes(utf8);
            }
            case Tuple t -> {
                out.write('(');
                t.items().forEach(this::value);
                out.write('t');
            }
            case List<?> list -> {
                out.write(']');
                if (!list.isEmpty()) {
                    out.write('(');
                    list.forEach(this::value);
                    out.write('e'); // APPENDS
                }
            }
            case Map<?, ?> map -> {
                out.write('}');
                if (!map.isEmpty()) {
                    out.write('(');
                    map.forEach((k, val) -> {
                        value(k);
                        value(val);
                    });
                    out.write('u'); // SETITEMS
                }
            }
            case Global g -> {
                out.write('c');
                out.writeBytes((g.module() + "\n" + g.name() + "\n").getBytes(StandardCharsets.UTF_8));
            }
            case Call c -> {
                value(c.callable());
                value(new Tuple(c.args()));
                out.write('R');
            }
            case NewObject o -> {
                value(o.cls());
                out.write(')'); // EMPTY_TUPLE
                out.write(0x81); // NEWOBJ
                if (o.state() != null) {
                    value(o.state());
                    out.write('b'); // BUILD
                }
            }
            case PersistentId p -> {
                value(new Tuple(p.id()));
                out.write('Q'); // BINPERSID
            }
            default -> throw new IllegalArgumentException("cannot pickle " + v.getClass().getName());
        }
    }

    private void integer(long v) {
        if (v >= 0 && v < 256) {
            out.write('K');
            out.write((int) v);
        } else if (v >= Integer.MIN_VALUE && v <= Integer.MAX_VALUE) {
            out.write('J');
            int32((int) v);
        } else {
            out.write(0x8a); // LONG1: 8 bytes, little-endian two's complement
            out.write(8);
            for (int s = 0; s < 64; s += 8) {
                out.write((int) (v >>> s));
            }
        }
    }

    private void int32(int v) {
        for (int s = 0; s < 32; s += 8) {
            out.write(v >>> s);
        }
    }
}
