package dev.moeport.io;

import dev.moeport.MoeportException;
import dev.moeport.Warnings;
import java.io.IOException;
import java.nio.channels.FileChannel;
import java.nio.charset.StandardCharsets;
import java.nio.file.FileVisitResult;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.SimpleFileVisitor;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.nio.file.attribute.BasicFileAttributes;
import java.util.ArrayList;
import java.util.List;
import java.util.function.Predicate;
import java.util.stream.Stream;

/**
 * The life of an output folder, whatever format goes into it: a run locks the folder, writes its whole
 * checkpoint into a hidden staging folder inside it ({@link #staging()}), then {@link #commit()} switches
 * it in. The switch is recorded first in a small journal naming the earlier checkpoint's files and the new
 * ones; the earlier files are moved aside, the new ones moved in, then the aside folder, the staging folder
 * and the journal are removed. A run that dies at any moment, even by SIGKILL, leaves either no journal
 * (the earlier checkpoint untouched, the staging folder a leftover) or a journal that the next run into the
 * folder ({@link #open}, or {@link #recover}) completes. So the folder always comes back as exactly the old
 * or exactly the new checkpoint.
 *
 * <p>The lock is an OS file lock, which the kernel drops when its process dies: a folder whose lock can be
 * taken holds only leftovers of dead runs, which are cleaned (saying so) before the run starts.
 */
public final class OutputFolder implements AutoCloseable {
    static final String LOCK = ".moeport.lock";
    static final String STAGING = ".moeport-staging";
    static final String ASIDE = ".moeport-earlier";
    static final String JOURNAL = ".moeport-switch";
    private static final String PARTIAL_SUFFIX = ".partial";

    /** Called after each step of a switch; tests stop a child JVM there. */
    static volatile Runnable afterSwitchStep = () -> {};

    private final Path out;
    private final boolean created;
    private final Predicate<String> earlierCheckpointFile;
    private final Predicate<String> marksComplete;
    private final boolean fsync;
    private final FileChannel lock;
    private boolean committed;
    private boolean abandoned;

    private OutputFolder(Path out, boolean created, Predicate<String> earlierCheckpointFile, Predicate<String> marksComplete, boolean fsync,
            FileChannel lock) {
        this.fsync = fsync;
        this.out = out;
        this.created = created;
        this.earlierCheckpointFile = earlierCheckpointFile;
        this.marksComplete = marksComplete;
        this.lock = lock;
    }

    /**
     * Creates {@code out} or checks it may be written: empty, or {@code overwrite} given; and neither the
     * same as nor inside (or around) any of the run's {@code inputs}, which an overwrite would destroy.
     * Takes the folder's lock, completes a switch an interrupted run left, removes other leftovers of dead
     * runs, and gives a fresh, empty staging folder.
     *
     * @param earlierCheckpointFile which names in the folder belong to an earlier checkpoint that the new
     *     one replaces (the new checkpoint's own names always do); other files stay
     * @param marksComplete the files that make a folder look like a finished checkpoint (an index, a tracker
     *     file): during a switch they leave first and come in last, so no moment shows an index naming a
     *     file that is not there
     * @param fsync flush the journal and the folders to disk (with {@code --fsync}: survives power loss; any
     *     killed process is survived without it)
     */
    public static OutputFolder open(Path out, boolean overwrite, List<Path> inputs, Predicate<String> earlierCheckpointFile,
            Predicate<String> marksComplete, boolean fsync) {
        try {
            requireApart(out, inputs);
            boolean created = !Files.exists(out);
            Files.createDirectories(out);
            FileChannel lock = FileChannel.open(out.resolve(LOCK), StandardOpenOption.CREATE, StandardOpenOption.WRITE);
            if (lock.tryLock() == null) {
                lock.close();
                throw new MoeportException(out + ": another moeport run is writing to this folder");
            }
            OutputFolder folder = new OutputFolder(out, created, earlierCheckpointFile, marksComplete, fsync, lock);
            try {
                cleanLeftovers(out);
                List<Path> entries;
                try (Stream<Path> s = Files.list(out)) {
                    entries = s.filter(p -> !p.getFileName().toString().equals(LOCK)).toList();
                }
                if (!entries.isEmpty() && !overwrite) {
                    throw new MoeportException(out + ": output folder exists and is not empty (give --overwrite to replace its checkpoint)");
                }
                Files.createDirectory(out.resolve(STAGING));
            } catch (RuntimeException | IOException e) {
                folder.releaseLock();
                throw e;
            }
            return folder;
        } catch (IOException e) {
            throw new MoeportException(out + ": cannot prepare output folder (" + IoErrors.why(e) + ")", e);
        }
    }

    /** Refuses an output that is the same as, inside or around a run's input, or that is not a folder. */
    static void requireApart(Path out, List<Path> inputs) throws IOException {
        Path target = canonical(out);
        for (Path input : inputs) {
            // A folder must neither hold nor lie in the output; a single file only must not lie in it.
            Path source = canonical(input);
            if (source.startsWith(target) || Files.isDirectory(input) && target.startsWith(source)) {
                throw new MoeportException(out + ": the output folder must be apart from the input " + input);
            }
        }
        if (Files.exists(out) && !Files.isDirectory(out)) {
            throw new MoeportException(out + ": exists and is not a folder");
        }
    }

    /** Where the run writes its checkpoint, laid out as it will be in the output folder. */
    public Path staging() {
        return out.resolve(STAGING);
    }

    public Path path() {
        return out;
    }

    /**
     * Switches the staged checkpoint in, replacing the earlier one. Once the journal is written the switch
     * is decided: if this run dies before it is done, the next one finishes it.
     */
    public synchronized void commit() {
        if (abandoned) {
            throw new MoeportException(out + ": the run was interrupted before its checkpoint was switched in");
        }
        switchIn(out, earlierCheckpointFile, marksComplete, fsync);
        committed = true;
    }

    /**
     * Switches the checkpoint staged in {@code out} in (with its folder lock held), replacing the earlier one;
     * the staging folder's own bookkeeping ({@link StagedPlan}'s hidden {@code .moeport*} files) stays behind.
     */
    static void switchIn(Path out, Predicate<String> earlierCheckpointFile, Predicate<String> marksComplete, boolean fsync) {
        Path staging = out.resolve(STAGING);
        try {
            List<String> fresh = new ArrayList<>(names(staging).stream().filter(n -> !n.startsWith(".moeport")).toList());
            List<String> earlier = new ArrayList<>();
            for (String name : names(out)) {
                if (!isOwn(name) && (fresh.contains(name) || earlierCheckpointFile.test(name))) {
                    earlier.add(name);
                }
            }
            // The switch goes in journal order: the earlier checkpoint's markers leave first, the new one's come in last.
            earlier.sort(java.util.Comparator.comparing(n -> !marksComplete.test(n)));
            fresh.sort(java.util.Comparator.comparing(marksComplete::test));
            if (fsync) {
                // Staged files reach the disk before the journal names them.
                syncFolder(staging);
            }
            StringBuilder journal = new StringBuilder();
            earlier.forEach(n -> journal.append("earlier\t").append(n).append('\n'));
            fresh.forEach(n -> journal.append("new\t").append(n).append('\n'));
            Path partial = out.resolve("." + JOURNAL.substring(1) + PARTIAL_SUFFIX);
            Files.write(partial, journal.toString().getBytes(StandardCharsets.UTF_8));
            if (fsync) {
                try (FileChannel c = FileChannel.open(partial, StandardOpenOption.WRITE)) {
                    c.force(true);
                }
            }
            Files.move(partial, out.resolve(JOURNAL), StandardCopyOption.ATOMIC_MOVE);
            if (fsync) {
                syncFolder(out);
            }
            afterSwitchStep.run();
            finishSwitch(out, fsync);
        } catch (IOException e) {
            throw new MoeportException(out + ": cannot switch the new checkpoint in (" + IoErrors.why(e)
                    + "); the next run into this folder finishes the switch", e);
        }
    }

    /**
     * For a Ctrl-C or kill -TERM hook: unless the switch has begun, runs {@code closeWriter} and removes the
     * staging folder, returning true. Waits for a switch in progress, and never touches finished output.
     */
    public synchronized boolean abandon(Runnable closeWriter) {
        if (committed || abandoned || Files.exists(out.resolve(JOURNAL))) {
            return false;
        }
        abandoned = true;
        closeWriter.run();
        deleteTree(staging());
        return true;
    }

    /** Without a commit, removes the staging folder; then releases the lock, and removes a folder this run created and left empty. */
    @Override
    public synchronized void close() {
        if (!committed && !Files.exists(out.resolve(JOURNAL))) {
            deleteTree(staging());
        }
        releaseLock();
        if (created && !committed) {
            try (Stream<Path> s = Files.list(out)) {
                if (s.findAny().isEmpty()) {
                    Files.deleteIfExists(out);
                }
            } catch (IOException e) {
                // Best effort: an empty folder does not look like a checkpoint.
            }
        }
    }

    private void releaseLock() {
        try {
            if (lock.isOpen()) {
                lock.close();
                Files.deleteIfExists(out.resolve(LOCK));
            }
        } catch (IOException e) {
            // The lock file is hidden, and the next run takes the lock again.
        }
    }

    /**
     * Brings a folder an interrupted run left back to exactly one whole checkpoint, if its lock is free:
     * finishes a recorded switch and removes leftovers. Returns false when another run holds the folder.
     */
    public static boolean recover(Path out) {
        try (FileChannel lock = FileChannel.open(out.resolve(LOCK), StandardOpenOption.CREATE, StandardOpenOption.WRITE)) {
            if (lock.tryLock() == null) {
                return false;
            }
            cleanLeftovers(out);
            return true;
        } catch (IOException e) {
            throw new MoeportException(out + ": cannot recover the output folder (" + IoErrors.why(e) + ")", e);
        } finally {
            try {
                Files.deleteIfExists(out.resolve(LOCK));
            } catch (IOException ignored) {
                // Hidden; the next run takes the lock again.
            }
        }
    }

    /**
     * For readers: a folder that an interrupted run left in the middle of a recorded switch is brought to the
     * new checkpoint first (the journal is only written once that checkpoint is complete). Refused while a
     * run is switching it.
     */
    public static void finishInterruptedSwitch(Path dir) {
        if (Files.isDirectory(dir) && Files.exists(dir.resolve(JOURNAL)) && !recover(dir)) {
            throw new MoeportException(dir + ": a moeport run is switching a new checkpoint into this folder; try again when it ends");
        }
    }

    /**
     * With the lock held: finishes a recorded switch, then removes what dead runs left (staging, partial files).
     * Refused while parts of a plan write into the staging folder (they hold their own locks, not the folder's).
     */
    static void cleanLeftovers(Path out) throws IOException {
        cleanLeftovers(out, true);
    }

    /** As above; {@code staging} false keeps the staging folder (a plan's parts may share it). */
    static void cleanLeftovers(Path out, boolean staging) throws IOException {
        if (Files.exists(out.resolve(JOURNAL))) {
            finishSwitch(out, true);
            Warnings.warn(out + ": finished switching in the checkpoint an interrupted run had completed");
        }
        if (staging && !StagedPlan.liveParts(out.resolve(STAGING)).isEmpty()) {
            throw new MoeportException(out + ": parts of a plan are writing into this folder (" + STAGING + "); wait for them, or stop them first");
        }
        List<String> left = new ArrayList<>();
        for (String name : names(out)) {
            boolean partial = name.startsWith(".") && name.endsWith(PARTIAL_SUFFIX);
            if (partial || staging && name.equals(STAGING) || name.equals(ASIDE)) {
                deleteTree(out.resolve(name));
                left.add(name);
            }
        }
        if (!left.isEmpty()) {
            Warnings.warn(out + ": removed the leftovers of an interrupted run (" + String.join(", ", left) + ")");
        }
    }

    /**
     * Carries out the journal's switch from wherever it stopped: each step is done only if it was not yet,
     * so it may be repeated after any interruption.
     */
    static void finishSwitch(Path out, boolean fsync) throws IOException {
        Path staging = out.resolve(STAGING);
        Path aside = out.resolve(ASIDE);
        List<String> earlier = new ArrayList<>();
        List<String> fresh = new ArrayList<>();
        for (String line : Files.readAllLines(out.resolve(JOURNAL), StandardCharsets.UTF_8)) {
            int tab = line.indexOf('\t');
            if (tab < 0) {
                continue;
            }
            (line.startsWith("new\t") ? fresh : earlier).add(line.substring(tab + 1));
        }
        Files.createDirectories(aside);
        for (String name : earlier) {
            // Once a new file of this name has gone in (it is no longer staged), what is in place is the new one.
            boolean replacedAlready = fresh.contains(name) && !Files.exists(staging.resolve(name), java.nio.file.LinkOption.NOFOLLOW_LINKS);
            if (!replacedAlready && Files.exists(out.resolve(name), java.nio.file.LinkOption.NOFOLLOW_LINKS)) {
                Files.move(out.resolve(name), aside.resolve(name), StandardCopyOption.ATOMIC_MOVE);
                afterSwitchStep.run();
            }
        }
        for (String name : fresh) {
            if (Files.exists(staging.resolve(name), java.nio.file.LinkOption.NOFOLLOW_LINKS)) {
                Files.move(staging.resolve(name), out.resolve(name), StandardCopyOption.ATOMIC_MOVE);
                afterSwitchStep.run();
            }
        }
        if (fsync) {
            // The new files are in place on disk before the journal that could redo it goes.
            syncFolder(out);
        }
        deleteTree(aside);
        afterSwitchStep.run();
        deleteTree(staging);
        Files.deleteIfExists(out.resolve(JOURNAL));
    }

    private static boolean isOwn(String name) {
        return name.equals(LOCK) || name.equals(STAGING) || name.equals(ASIDE) || name.equals(JOURNAL);
    }

    static List<String> names(Path dir) throws IOException {
        try (Stream<Path> s = Files.list(dir)) {
            return s.map(p -> p.getFileName().toString()).sorted().toList();
        }
    }

    /** Removes a file or a folder with all it holds, best effort (freeing reserved space matters more than a message). */
    static void deleteTree(Path root) {
        try {
            Files.walkFileTree(root, new SimpleFileVisitor<>() {
                @Override
                public FileVisitResult visitFile(Path file, BasicFileAttributes attrs) throws IOException {
                    Files.deleteIfExists(file);
                    return FileVisitResult.CONTINUE;
                }

                @Override
                public FileVisitResult postVisitDirectory(Path dir, IOException e) throws IOException {
                    Files.deleteIfExists(dir);
                    return FileVisitResult.CONTINUE;
                }
            });
        } catch (NoSuchFileException e) {
            // Gone already.
        } catch (IOException e) {
            throw new MoeportException(root + ": cannot remove (" + IoErrors.why(e) + ")", e);
        }
    }

    /** Flushes a folder's entries (the renames done in it) to disk, where the platform allows it. */
    public static void syncFolder(Path dir) {
        try (FileChannel channel = FileChannel.open(dir, StandardOpenOption.READ)) {
            channel.force(true);
        } catch (IOException e) {
            // Some platforms cannot open a folder: its entries then reach the disk with the file system's own journal.
        }
    }

    /** The real path of {@code p}, or of its nearest existing ancestor with the rest appended. */
    static Path canonical(Path p) throws IOException {
        Path absolute = p.toAbsolutePath().normalize();
        Path existing = absolute;
        while (existing != null && !Files.exists(existing)) {
            existing = existing.getParent();
        }
        return existing == null ? absolute : existing.toRealPath().resolve(existing.relativize(absolute));
    }
}
