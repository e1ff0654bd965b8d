package dev.moeport.io;

import java.io.IOException;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.List;

/**
 * The memory this process's page cache may grow into: the kernel's estimate of available memory
 * ({@code MemAvailable} of {@code /proc/meminfo}), or less under a memory cgroup's limit (v2 {@code memory.max},
 * v1 {@code memory.limit_in_bytes}, of the process's cgroup and those above it) less what the cgroup uses. Unknown
 * (not Linux, unreadable files): unlimited.
 */
public final class MemoryLimit {
    private static final Path PROC = Path.of("/proc");
    private static final Path CGROUPS = Path.of("/sys/fs/cgroup");

    private MemoryLimit() {}

    public static long available() {
        return available(PROC, CGROUPS);
    }

    /** As above, with {@code /proc} and {@code /sys/fs/cgroup} at other places (for tests). */
    static long available(Path proc, Path cgroups) {
        long available = memAvailable(proc.resolve("meminfo"));
        for (String line : lines(proc.resolve("self/cgroup"))) {
            // v2: "0::/path"; v1: "N:memory:/path" (or with other controllers joined by commas)
            String[] f = line.split(":", 3);
            if (f.length < 3) {
                continue;
            }
            boolean v2 = f[0].equals("0") && f[1].isEmpty();
            boolean v1 = List.of(f[1].split(",")).contains("memory");
            if (v2 || v1) {
                Path root = v2 ? cgroups : cgroups.resolve("memory");
                available = Math.min(available, cgroupRoom(root, f[2], v2 ? "memory.max" : "memory.limit_in_bytes",
                        v2 ? "memory.current" : "memory.usage_in_bytes"));
            }
        }
        return available;
    }

    /** The least room under the limits of {@code path} and the cgroups above it. */
    private static long cgroupRoom(Path root, String path, String limitFile, String usageFile) {
        long room = Long.MAX_VALUE;
        for (Path dir = root.resolve(path.replaceFirst("^/", "")); dir != null && dir.startsWith(root); dir = dir.getParent()) {
            long limit = number(dir.resolve(limitFile));
            long usage = number(dir.resolve(usageFile));
            if (limit != Long.MAX_VALUE && usage != Long.MAX_VALUE) {
                room = Math.min(room, Math.max(0, limit - usage));
            }
        }
        return room;
    }

    private static long memAvailable(Path meminfo) {
        for (String line : lines(meminfo)) {
            if (line.startsWith("MemAvailable:")) {
                String[] f = line.split("\\s+");
                try {
                    return Long.parseLong(f[1]) * 1024;
                } catch (NumberFormatException | ArrayIndexOutOfBoundsException e) {
                    return Long.MAX_VALUE;
                }
            }
        }
        return Long.MAX_VALUE;
    }

    /** A file's single number; "max" or anything unreadable is unlimited. */
    private static long number(Path file) {
        List<String> lines = lines(file);
        try {
            return lines.isEmpty() ? Long.MAX_VALUE : Long.parseLong(lines.getFirst().strip());
        } catch (NumberFormatException e) {
            return Long.MAX_VALUE;
        }
    }

    private static List<String> lines(Path file) {
        try {
            return Files.readAllLines(file);
        } catch (IOException | SecurityException e) {
            return List.of();
        }
    }
}
