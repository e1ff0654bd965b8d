/*
 * Every native function moeport calls through the Java Foreign Function & Memory API
 * (java.lang.foreign), as declared by glibc on Linux. The bindings live in
 * src/main/java/dev/moeport/io/NativeIO.java; see README.md in this folder for how they follow
 * these declarations.
 */
#include <stddef.h>     /* size_t */
#include <sys/types.h>  /* off_t: 64-bit on LP64 Linux */

/* <sys/mman.h>: access-pattern hints for a range of a mapping; addr must be page-aligned.
 * Returns 0 or an error number (not errno). Used with POSIX_MADV_SEQUENTIAL (2) and
 * POSIX_MADV_WILLNEED (3). glibc ignores POSIX_MADV_DONTNEED, hence madvise below. */
int posix_madvise(void *addr, size_t len, int advice);

/* <sys/mman.h> (Linux): used only with MADV_DONTNEED (4), which drops the pages of a read-only
 * file mapping from this process; touching them again re-reads them from the page cache.
 * Returns 0, or -1 with errno. */
int madvise(void *addr, size_t length, int advice);

/* <fcntl.h>: variadic; moeport passes the optional mode (0) explicitly as the first variadic
 * argument. Flags used: O_WRONLY (1) or O_RDONLY (0), with O_CLOEXEC (0x80000). Returns a descriptor, or -1 with errno. */
int open(const char *pathname, int flags, ... /* mode_t mode */);

/* <fcntl.h> (Linux): reserves disk blocks for [offset, offset+len) with mode 0, so that a full disk
 * is reported (ENOSPC, EFBIG) before a long write starts. Unlike posix_fallocate, it never falls back
 * to writing zeros on file systems without support (EOPNOTSUPP): moeport then just skips it.
 * Returns 0, or -1 with errno. */
int fallocate(int fd, int mode, off_t offset, off_t len);

/* <unistd.h> */
int close(int fd);

/* <unistd.h>: 1 when fd (2, standard error) is a terminal, else 0: progress is redrawn on one line
 * only there, and printed as plain lines at an interval elsewhere (logs, pipes). */
int isatty(int fd);

/* <sys/ioctl.h>: variadic; used only as ioctl(2, TIOCGWINSZ (0x5413), struct winsize *) to read the
 * terminal's width (ws_col, the second unsigned short of struct winsize). Returns 0, or -1 with errno. */
int ioctl(int fd, unsigned long request, ...);

/* <fcntl.h> (Linux): write-behind of an output larger than memory. SYNC_FILE_RANGE_WRITE (2) starts the
 * write-back of [offset, offset+nbytes) without waiting; WAIT_BEFORE | WRITE | WAIT_AFTER (7) waits until it
 * is on the disk. Returns 0, or -1 with errno. */
int sync_file_range(int fd, off_t offset, off_t nbytes, unsigned int flags);

/* <fcntl.h>: used only with POSIX_FADV_DONTNEED (4), to drop written pages once they are on the disk, and
 * input pages read for the last time in a run larger than memory.
 * Returns 0 or an error number (not errno). */
int posix_fadvise(int fd, off_t offset, off_t len, int advice);

/* <unistd.h>: reads a run's input ahead into the page cache, in a run larger than memory (into scratch memory, whose
 * bytes are not used: the kernel's read-ahead for read calls reads in larger disk requests than advice does there).
 * Returns the bytes read, 0 at the end of the file, or -1 (errno). */
ssize_t pread(int fd, void *buf, size_t count, off_t offset);

/* <unistd.h>: the page size, for aligning madvise ranges. */
int getpagesize(void);

/* <unistd.h>: called for its return, not its value: the JVM raises a fault that a copy out of a file mapping left
 * pending at its next safepoint poll, and a return from native code is one (io/MappedMemory). */
pid_t getpid(void);
