import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.SymbolLookup;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.List;
import java.util.Random;
import java.util.concurrent.atomic.AtomicLong;

/**
 * How fast T threads put bytes into the page cache of one file, the way an export writes a shard: with pwrite
 * (FileChannel positioned writes) or through a shared mapping, against pwrite into a file per thread. Each thread
 * copies 8 MB of random bytes from its own memory, 64 MB chunks taken in turn; the file is preallocated with
 * fallocate (or left sparse). Prints seconds, GB/s and the process's user and system CPU time.
 *
 * <p>Usage: java --enable-native-access=ALL-UNNAMED WriteBench.java MODE THREADS GB DIR [sparse]
 * <br>MODE: pwrite (one file), pwrite-per-thread (a file each), mmap (one file, through a mapping of all of it),
 * mmap-populate (the same, each chunk prefaulted with MADV_POPULATE_WRITE first).
 */
public class WriteBench {
    private static final Linker LINKER = Linker.nativeLinker();
    private static final SymbolLookup LIBC = LINKER.defaultLookup();
    private static final MethodHandle OPEN = LINKER.downcallHandle(LIBC.find("open").orElseThrow(),
            FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.ADDRESS, ValueLayout.JAVA_INT, ValueLayout.JAVA_INT));
    private static final MethodHandle FALLOCATE = LINKER.downcallHandle(LIBC.find("fallocate").orElseThrow(),
            FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.JAVA_INT, ValueLayout.JAVA_INT, ValueLayout.JAVA_LONG, ValueLayout.JAVA_LONG));
    private static final MethodHandle CLOSE = LINKER.downcallHandle(LIBC.find("close").orElseThrow(),
            FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.JAVA_INT));
    private static final MethodHandle MADVISE = LINKER.downcallHandle(LIBC.find("madvise").orElseThrow(),
            FunctionDescriptor.of(ValueLayout.JAVA_INT, ValueLayout.JAVA_LONG, ValueLayout.JAVA_LONG, ValueLayout.JAVA_INT));
    private static final int O_WRONLY_CREAT = 0102;
    private static final int MADV_POPULATE_WRITE = 23;
    private static final long CHUNK = 64L << 20;
    private static final long SLICE = 8L << 20;

    public static void main(String[] args) throws Throwable {
        String mode = args[0];
        int threads = Integer.parseInt(args[1]);
        long total = (long) (Double.parseDouble(args[2]) * 1e9) / CHUNK * CHUNK;
        Path dir = Path.of(args[3]);
        boolean preallocate = args.length < 5 || !args[4].equals("sparse");
        boolean filePerThread = mode.equals("pwrite-per-thread");
        boolean mapped = mode.startsWith("mmap");
        int files = filePerThread ? threads : 1;
        long perFile = total / files / CHUNK * CHUNK;
        total = perFile * files;
        List<Path> paths = new ArrayList<>();
        for (int f = 0; f < files; f++) {
            Path p = dir.resolve("write-bench-" + f);
            Files.deleteIfExists(p);
            paths.add(p);
        }
        long[] cpuBefore = cpuTicks();
        long start = System.nanoTime();
        for (Path p : paths) {
            create(p, perFile, preallocate);
        }
        List<FileChannel> channels = new ArrayList<>();
        for (Path p : paths) {
            channels.add(FileChannel.open(p, StandardOpenOption.READ, StandardOpenOption.WRITE));
        }
        Arena shared = Arena.ofShared();
        MemorySegment map = mapped ? channels.getFirst().map(FileChannel.MapMode.READ_WRITE, 0, perFile, shared) : null;
        AtomicLong nextChunk = new AtomicLong();
        long bytes = total;
        Thread[] workers = new Thread[threads];
        for (int t = 0; t < threads; t++) {
            int id = t;
            workers[t] = new Thread(() -> {
                try (Arena arena = Arena.ofConfined()) {
                    MemorySegment source = arena.allocate(SLICE, 4096);
                    Random random = new Random(id);
                    for (long i = 0; i < SLICE; i += 8) {
                        source.set(ValueLayout.JAVA_LONG_UNALIGNED, i, random.nextLong());
                    }
                    ByteBuffer buffer = source.asByteBuffer();
                    if (filePerThread) {
                        for (long at = 0; at < perFile; at += SLICE) {
                            pwrite(channels.get(id), buffer, at);
                        }
                        return;
                    }
                    long chunk;
                    while ((chunk = nextChunk.getAndAdd(CHUNK)) < bytes) {
                        if (mode.equals("mmap-populate") && (int) MADVISE.invokeExact(map.address() + chunk, CHUNK, MADV_POPULATE_WRITE) != 0) {
                            throw new IllegalStateException("madvise(MADV_POPULATE_WRITE) failed");
                        }
                        for (long s = 0; s < CHUNK; s += SLICE) {
                            if (map != null) {
                                MemorySegment.copy(source, 0, map, chunk + s, SLICE);
                            } else {
                                pwrite(channels.getFirst(), buffer, chunk + s);
                            }
                        }
                    }
                } catch (Throwable e) {
                    e.printStackTrace();
                    System.exit(2);
                }
            });
            workers[t].start();
        }
        for (Thread t : workers) {
            t.join();
        }
        shared.close();
        for (FileChannel c : channels) {
            c.close();
        }
        double seconds = (System.nanoTime() - start) / 1e9;
        long[] cpuAfter = cpuTicks();
        System.out.printf("%-18s %2d threads, %s: %6.2f s %6.2f GB/s  user %5.1f s  sys %5.1f s%n", mode, threads,
                preallocate ? "preallocated" : "sparse", seconds, total / 1e9 / seconds,
                (cpuAfter[0] - cpuBefore[0]) / 100.0, (cpuAfter[1] - cpuBefore[1]) / 100.0);
        for (Path p : paths) {
            Files.deleteIfExists(p);
        }
    }

    private static void create(Path file, long length, boolean preallocate) throws Throwable {
        try (Arena arena = Arena.ofConfined()) {
            int fd = (int) OPEN.invokeExact(arena.allocateFrom(file.toString()), O_WRONLY_CREAT, 0644);
            if (fd < 0) {
                throw new IllegalStateException("cannot create " + file);
            }
            if (preallocate && (int) FALLOCATE.invokeExact(fd, 0, 0L, length) != 0) {
                throw new IllegalStateException("fallocate failed on " + file);
            }
            int ignored = (int) CLOSE.invokeExact(fd);
        }
        if (!preallocate) {
            try (FileChannel c = FileChannel.open(file, StandardOpenOption.WRITE)) {
                c.write(ByteBuffer.allocate(1), length - 1);
            }
        }
    }

    private static void pwrite(FileChannel channel, ByteBuffer buffer, long position) throws java.io.IOException {
        buffer.clear();
        while (buffer.hasRemaining()) {
            channel.write(buffer, position + buffer.position());
        }
    }

    /** The process's user and system CPU time so far, in clock ticks (/proc/self/stat). */
    private static long[] cpuTicks() throws java.io.IOException {
        String stat = Files.readString(Path.of("/proc/self/stat"));
        String[] f = stat.substring(stat.lastIndexOf(')') + 2).split(" ");
        return new long[] {Long.parseLong(f[11]), Long.parseLong(f[12])};
    }
}
