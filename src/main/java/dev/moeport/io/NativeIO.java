package dev.moeport.io;

import dev.moeport.MoeportException;
import dev.moeport.Warnings;
import java.lang.foreign.Arena;
import java.lang.foreign.FunctionDescriptor;
import java.lang.foreign.Linker;
import java.lang.foreign.MemoryLayout;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.StructLayout;
import java.lang.foreign.SymbolLookup;
import java.lang.foreign.ValueLayout;
import java.lang.invoke.MethodHandle;
import java.lang.invoke.VarHandle;
import java.nio.file.Path;

/**
 * The few libc calls moeport makes through the Foreign Function &amp; Memory API; their C declarations
 * are in {@code ffi-headers/moeport_native.h}. Every call is a hint or an early check, never needed
 * for correct output: when native access is not enabled (no {@code --enable-native-access}), or a
 * symbol is missing, each becomes a no-op and one warning is printed.
 */
public final class NativeIO {
    /** Access-pattern hints for a mapped range. */
    public enum Advice {
        /** Read once, front to back: the kernel reads ahead aggressively. */
        SEQUENTIAL,
        /** In no order, or written and not read: no read-ahead around a page fault. */
        RANDOM,
        /** Needed soon: start reading it in now. */
        WILLNEED,
        /** Done with it: drop the pages from this process (a file mapping re-reads them if touched again). */
        DONTNEED
    }

    // <sys/mman.h> (Linux, glibc)
    private static final int POSIX_MADV_RANDOM = 1;
    private static final int POSIX_MADV_SEQUENTIAL = 2;
    private static final int POSIX_MADV_WILLNEED = 3;
    private static final int MADV_DONTNEED = 4;
    // <fcntl.h>
    private static final int O_RDONLY = 0;
    private static final int O_WRONLY = 1;
    private static final int SYNC_FILE_RANGE_WRITE = 2;
    private static final int SYNC_FILE_RANGE_WAIT_ALL = 1 | 2 | 4;
    private static final int POSIX_FADV_DONTNEED = 4;
    private static final int O_CLOEXEC = 0x80000;
    // <sys/ioctl.h> (Linux x86-64 and AArch64)
    private static final long TIOCGWINSZ = 0x5413;
    // <errno.h>
    private static final int ENOSPC = 28;
    private static final int EFBIG = 27;

    /** Bytes asked for per WILLNEED call: Linux's default read-ahead window, the least a call reads in full. */
    private static final long WILLNEED_STEP = 128 << 10;

    private static final Bindings BINDINGS = Bindings.load();
    private static volatile boolean warned;

    private NativeIO() {}

    /**
     * Advises the kernel about {@code segment}, a slice of a mapped file. SEQUENTIAL and WILLNEED go
     * through {@code posix_madvise} on the pages the slice touches; DONTNEED goes through Linux
     * {@code madvise}, because glibc's {@code posix_madvise} ignores POSIX_MADV_DONTNEED, and only on
     * the pages wholly inside the slice, so that a neighbour still in use keeps its pages.
     */
    public static void advise(MemorySegment segment, Advice advice) {
        Bindings b = bindings();
        if (b == null || segment.byteSize() == 0 || !segment.isNative()) {
            return;
        }
        long page = b.pageSize;
        long start = segment.address();
        long end = start + segment.byteSize();
        boolean inward = advice == Advice.DONTNEED;
        long alignedStart = inward ? ceil(start, page) : floor(start, page);
        long alignedEnd = inward ? floor(end, page) : ceil(end, page);
        if (alignedEnd <= alignedStart) {
            return;
        }
        MemorySegment range = MemorySegment.ofAddress(alignedStart);
        long length = alignedEnd - alignedStart;
        try {
            // Errors are ignored on purpose: advice is a hint; a refusal changes speed, never output.
            switch (advice) {
                case SEQUENTIAL -> { int ignored = (int) b.posixMadvise.invokeExact(range, length, POSIX_MADV_SEQUENTIAL); }
                case RANDOM -> { int ignored = (int) b.posixMadvise.invokeExact(range, length, POSIX_MADV_RANDOM); }
                case WILLNEED -> {
                    // Linux reads at most its read-ahead window (read_ahead_kb, or the disk's largest request) per call,
                    // whatever the length: asked for a gigabyte at once, it read 8 MB. So the range goes a step at a time.
                    for (long at = 0; at < length; at += WILLNEED_STEP) {
                        int ignored = (int) b.posixMadvise.invokeExact(MemorySegment.ofAddress(alignedStart + at), Math.min(WILLNEED_STEP, length - at),
                                POSIX_MADV_WILLNEED);
                    }
                }
                case DONTNEED -> { int ignored = (int) b.madvise.invokeExact(range, length, MADV_DONTNEED); }
            }
        } catch (Throwable t) {
            throw new IllegalStateException("madvise failed", t);
        }
    }

    /**
     * Reserves {@code length} bytes of disk for {@code file} with Linux {@code fallocate}, so that a
     * full disk is reported before the run instead of in the middle. File systems without fallocate
     * are skipped silently (the writes will report a full disk themselves). Whether the space is reserved.
     */
    public static boolean reserve(Path file, long length) {
        Bindings b = bindings();
        if (b == null || length <= 0) {
            return false;
        }
        try (Arena arena = Arena.ofConfined()) {
            MemorySegment state = arena.allocate(b.callState);
            int fd = (int) b.open.invokeExact(state, arena.allocateFrom(file.toString()), O_WRONLY | O_CLOEXEC, 0);
            if (fd < 0) {
                return false;
            }
            int rc = (int) b.fallocate.invokeExact(state, fd, 0, 0L, length);
            int errno = (int) b.errno.get(state, 0L);
            int ignored = (int) b.close.invokeExact(fd);
            if (rc != 0 && (errno == ENOSPC || errno == EFBIG)) {
                throw new MoeportException(file + ": not enough disk space for " + length + " bytes");
            }
            return rc == 0;
        } catch (MoeportException e) {
            throw e;
        } catch (Throwable t) {
            throw new IllegalStateException("fallocate failed", t);
        }
    }

    /** A write-only descriptor of {@code file} for write-behind (close it with {@link #close}), or -1 when native calls are off or it fails. */
    static int openForWriting(Path file) {
        return open(file, O_WRONLY);
    }

    /** A read-only descriptor of {@code file} (close it with {@link #close}), or -1 when native calls are off or it fails. */
    static int openForReading(Path file) {
        return open(file, O_RDONLY);
    }

    private static int open(Path file, int access) {
        Bindings b = bindings();
        if (b == null) {
            return -1;
        }
        try (Arena arena = Arena.ofConfined()) {
            return (int) b.open.invokeExact(arena.allocate(b.callState), arena.allocateFrom(file.toString()), access | O_CLOEXEC, 0);
        } catch (Throwable t) {
            throw new IllegalStateException("open failed", t);
        }
    }

    /**
     * Drops the clean pages wholly inside {@code [offset, offset + length)} of the file from the page cache (pages a
     * process still maps stay). A hint: a failure leaves the pages cached.
     */
    static void dropCached(int fd, long offset, long length) {
        if (length <= 0) {
            return;
        }
        try {
            int ignored = (int) BINDINGS.posixFadvise.invokeExact(fd, offset, length, POSIX_FADV_DONTNEED);
        } catch (Throwable t) {
            throw new IllegalStateException("posix_fadvise failed", t);
        }
    }

    /**
     * Reads up to {@code buffer}'s size of the file from {@code offset} into {@code buffer} ({@code pread}): the bytes
     * read, 0 at the end of the file, or -1 where it failed.
     */
    static long read(int fd, MemorySegment buffer, long offset) {
        try {
            return (long) BINDINGS.pread.invokeExact(fd, buffer, buffer.byteSize(), offset);
        } catch (Throwable t) {
            throw new IllegalStateException("pread failed", t);
        }
    }

    /** Starts writing {@code [offset, offset + length)} of the file to the disk, without waiting. */
    static void startWriteBack(int fd, long offset, long length) {
        syncFileRange(fd, offset, length, SYNC_FILE_RANGE_WRITE);
    }

    /** Waits until {@code [offset, offset + length)} of the file is on the disk, then drops its pages from the page cache. */
    static void dropWritten(int fd, long offset, long length) {
        syncFileRange(fd, offset, length, SYNC_FILE_RANGE_WAIT_ALL);
        // Errors are ignored on purpose, as for advice: the pages stay cached, the output is the same.
        dropCached(fd, offset, length);
    }

    private static void syncFileRange(int fd, long offset, long length, int flags) {
        try {
            // A refusal (EIO aside, which the close or the next write reports) only changes when the pages reach the disk.
            int ignored = (int) BINDINGS.syncFileRange.invokeExact(fd, offset, length, flags);
        } catch (Throwable t) {
            throw new IllegalStateException("sync_file_range failed", t);
        }
    }

    static void close(int fd) {
        try {
            int ignored = (int) BINDINGS.close.invokeExact(fd);
        } catch (Throwable t) {
            throw new IllegalStateException("close failed", t);
        }
    }

    /** Whether the file descriptor (2: standard error) is a terminal; false when native calls are off. */
    public static boolean isTerminal(int fd) {
        Bindings b = bindings();
        if (b == null) {
            return false;
        }
        try {
            return (int) b.isatty.invokeExact(fd) == 1;
        } catch (Throwable t) {
            throw new IllegalStateException("isatty failed", t);
        }
    }

    /** The width in columns of the terminal on the file descriptor, or 0 when it is none or does not say. */
    public static int terminalColumns(int fd) {
        Bindings b = bindings();
        if (b == null) {
            return 0;
        }
        try (Arena arena = Arena.ofConfined()) {
            // struct winsize { unsigned short ws_row, ws_col, ws_xpixel, ws_ypixel; }
            MemorySegment winsize = arena.allocate(ValueLayout.JAVA_SHORT, 4);
            int rc = (int) b.ioctl.invokeExact(fd, TIOCGWINSZ, winsize);
            return rc == 0 ? Short.toUnsignedInt(winsize.getAtIndex(ValueLayout.JAVA_SHORT, 1)) : 0;
        } catch (Throwable t) {
            throw new IllegalStateException("ioctl(TIOCGWINSZ) failed", t);
        }
    }

    /**
     * Calls a native function that does nothing ({@code getpid}): its return is a safepoint poll, where the JVM raises
     * a fault a copy from a mapping left pending ({@link MappedMemory}).
     */
    static void returnFromNative() {
        if (BINDINGS == null) {
            return;
        }
        try {
            int ignored = (int) BINDINGS.getpid.invokeExact();
        } catch (InternalError fault) {
            throw fault;
        } catch (Throwable t) {
            throw new IllegalStateException("getpid failed", t);
        }
    }

    /** Whether native calls are on (quietly: {@link #bindings} warns when they are not). */
    static boolean available() {
        return BINDINGS != null;
    }

    private static Bindings bindings() {
        if (BINDINGS == null && !warned) {
            warned = true;
            Warnings.warn("native calls are off (run the JVM with --enable-native-access=ALL-UNNAMED);"
                    + " page-cache hints, disk-space reservation and terminal detection are skipped");
        }
        return BINDINGS;
    }

    private static long floor(long x, long page) {
        return x & -page;
    }

    private static long ceil(long x, long page) {
        return (x + page - 1) & -page;
    }

    private record Bindings(MethodHandle posixMadvise, MethodHandle madvise, MethodHandle open, MethodHandle fallocate,
                            MethodHandle close, MethodHandle isatty, MethodHandle ioctl, MethodHandle syncFileRange,
                            MethodHandle posixFadvise, MethodHandle pread, MethodHandle getpid, StructLayout callState,
                            VarHandle errno, long pageSize) {

        static Bindings load() {
            if (!NativeIO.class.getModule().isNativeAccessEnabled()) {
                return null;
            }
            try {
                Linker linker = Linker.nativeLinker();
                SymbolLookup libc = linker.defaultLookup();
                StructLayout callState = Linker.Option.captureStateLayout();
                VarHandle errno = callState.varHandle(MemoryLayout.PathElement.groupElement("errno"));
                Linker.Option captureErrno = Linker.Option.captureCallState("errno");
                var jint = ValueLayout.JAVA_INT;
                var jlong = ValueLayout.JAVA_LONG;
                var ptr = ValueLayout.ADDRESS;
                MethodHandle posixMadvise = linker.downcallHandle(libc.findOrThrow("posix_madvise"),
                        FunctionDescriptor.of(jint, ptr, jlong, jint));
                MethodHandle madvise = linker.downcallHandle(libc.findOrThrow("madvise"),
                        FunctionDescriptor.of(jint, ptr, jlong, jint));
                MethodHandle open = linker.downcallHandle(libc.findOrThrow("open"),
                        FunctionDescriptor.of(jint, ptr, jint, jint), captureErrno, Linker.Option.firstVariadicArg(2));
                MethodHandle fallocate = linker.downcallHandle(libc.findOrThrow("fallocate"),
                        FunctionDescriptor.of(jint, jint, jint, jlong, jlong), captureErrno);
                MethodHandle close = linker.downcallHandle(libc.findOrThrow("close"), FunctionDescriptor.of(jint, jint));
                MethodHandle isatty = linker.downcallHandle(libc.findOrThrow("isatty"), FunctionDescriptor.of(jint, jint));
                MethodHandle ioctl = linker.downcallHandle(libc.findOrThrow("ioctl"),
                        FunctionDescriptor.of(jint, jint, jlong, ptr), Linker.Option.firstVariadicArg(2));
                MethodHandle getpagesize = linker.downcallHandle(libc.findOrThrow("getpagesize"), FunctionDescriptor.of(jint));
                long pageSize = (int) getpagesize.invokeExact();
                MethodHandle syncFileRange = linker.downcallHandle(libc.findOrThrow("sync_file_range"),
                        FunctionDescriptor.of(jint, jint, jlong, jlong, jint));
                MethodHandle posixFadvise = linker.downcallHandle(libc.findOrThrow("posix_fadvise"),
                        FunctionDescriptor.of(jint, jint, jlong, jlong, jint));
                MethodHandle pread = linker.downcallHandle(libc.findOrThrow("pread"), FunctionDescriptor.of(jlong, jint, ptr, jlong, jlong));
                MethodHandle getpid = linker.downcallHandle(libc.findOrThrow("getpid"), FunctionDescriptor.of(jint));
                return new Bindings(posixMadvise, madvise, open, fallocate, close, isatty, ioctl, syncFileRange, posixFadvise, pread, getpid, callState,
                        errno, pageSize);
            } catch (Throwable t) {
                Warnings.warn("native calls are unavailable (" + t.getMessage() + ")");
                warned = true;
                return null;
            }
        }
    }
}
