package dev.moeport.io;

import dev.moeport.MoeportException;
import dev.moeport.Warnings;
import dev.moeport.plan.Part;
import java.io.IOException;
import java.nio.ByteBuffer;
import java.nio.channels.FileChannel;
import java.nio.channels.FileLock;
import java.nio.channels.OverlappingFileLockException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.nio.file.StandardOpenOption;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.TreeSet;
import java.util.function.Predicate;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;
import java.util.zip.CRC32C;

/**
 * A plan's output staged in its folder ({@code OUT/.moeport-staging/}), shared by the parts that write it,
 * on one machine or many over a shared file system. They coordinate through files, never holding the
 * folder's lock while they write:
 * <ul>
 *   <li>{@code .moeport-plan}: the plan's stamp (its inputs' names, sizes and modification times, the options, a
 *       digest of the layout, the number of parts) and which part writes which file. The first part writes it;
 *       a part of another plan (other inputs, options or number of parts) is refused.
 *   <li>{@code .moeport-part-I-of-N.lock}: an OS lock each part holds while it runs, so the same part cannot run
 *       twice, and leftovers are never cleaned under a live part.
 *   <li>{@code .moeport-part-I-of-N.manifest}: each file the part finished (renamed into place in the staging
 *       folder), with its size and CRC-32C, one line appended as it completes. {@code --resume} checks and
 *       reuses these; a file without its line is redone.
 *   <li>{@code .moeport-ready}: the checkpoint's other files (index, configs, tokenizer) are staged; the first
 *       part to join stages them, holding the folder lock for that moment.
 * </ul>
 * The part that finds every file of the plan recorded when it ends takes the folder lock and switches the
 * checkpoint in ({@link OutputFolder}'s journal), or {@link #finalizeFolder} does. Until then the output
 * folder shows nothing of it. The whole plan in one process is part 1/1, which holds the folder lock all along.
 */
public final class StagedPlan implements AutoCloseable {
    static final String PLAN = ".moeport-plan";
    static final String READY = ".moeport-ready";
    private static final Pattern PART_LOCK = Pattern.compile("\\.moeport-part-(\\d+)-of-(\\d+)\\.lock");
    /** How long a part waits for another to release the folder lock (held only to join or to switch); tests shorten it. */
    static volatile long folderLockWaitMillis = 120_000;
    /** Called when a part has written its files, before it completes the folder; tests hold the lock there. */
    static volatile Runnable beforeComplete = () -> {};

    /** A file of the plan: its path in the output folder, the part that writes it and its planned bytes. */
    public record PlannedFile(String path, int part, long bytes) {}

    /**
     * What makes two runs parts of one plan.
     *
     * @param options the options that shape the output, as given
     * @param inputs one line per input file: path, size, modification time
     * @param layout a digest of the plan's layout (files, tensors, dtypes, shapes)
     */
    public record Stamp(int parts, List<String> options, List<String> inputs, String layout, List<PlannedFile> files) {

        /** Why {@code other} (the plan staged in the folder) is not this plan, or null when it is. */
        String differenceFrom(Stamp other) {
            if (!other.inputs.equals(inputs)) {
                List<String> changed = new ArrayList<>(other.inputs);
                changed.removeAll(inputs);
                List<String> added = new ArrayList<>(inputs);
                added.removeAll(other.inputs);
                if (changed.isEmpty() && added.isEmpty()) {
                    return "the inputs differ";
                }
                String file = !changed.isEmpty() ? changed.getFirst() : added.getFirst();
                return "the input " + file.substring(0, file.indexOf('\t')) + " changed since (its size or modification time, or it is new or gone)";
            }
            if (!other.options.equals(options)) {
                return "the options differ (" + String.join(" ", other.options) + " there; " + String.join(" ", options) + " here)";
            }
            if (other.parts != parts) {
                return "it was split into " + other.parts + " parts, this run into " + parts;
            }
            if (!other.layout.equals(layout)) {
                return "its plan differs (another moeport version?)";
            }
            return null;
        }

        private String text() {
            StringBuilder s = new StringBuilder("moeport-plan\t1\nparts\t" + parts + "\nlayout\t" + layout + "\n");
            options.forEach(o -> s.append("option\t").append(o.replace('\n', ' ')).append('\n'));
            inputs.forEach(i -> s.append("input\t").append(i).append('\n'));
            files.forEach(f -> s.append("file\t").append(f.path).append('\t').append(f.part).append('\t').append(f.bytes).append('\n'));
            return s.toString();
        }

        private static Stamp parse(List<String> lines) {
            int parts = 0;
            String layout = "";
            List<String> options = new ArrayList<>();
            List<String> inputs = new ArrayList<>();
            List<PlannedFile> files = new ArrayList<>();
            for (String line : lines) {
                String[] f = line.split("\t", 2);
                if (f.length < 2) {
                    continue;
                }
                switch (f[0]) {
                    case "parts" -> parts = Integer.parseInt(f[1]);
                    case "layout" -> layout = f[1];
                    case "option" -> options.add(f[1]);
                    case "input" -> inputs.add(f[1]);
                    case "file" -> {
                        String[] p = f[1].split("\t");
                        files.add(new PlannedFile(p[0], Integer.parseInt(p[1]), Long.parseLong(p[2])));
                    }
                    default -> { }
                }
            }
            return new Stamp(parts, options, inputs, layout, files);
        }
    }

    /** A finished file as a manifest records it. */
    private record Finished(String path, long size, long crc) {
        String line() {
            return path + "\t" + size + "\t" + Long.toHexString(crc) + "\n";
        }
    }

    private final Path out;
    private final Path staging;
    private final Part part;
    private final Stamp stamp;
    private final Predicate<String> earlierCheckpointFile;
    private final Predicate<String> marksComplete;
    private final boolean fsync;
    private FileChannel folderLock;
    private FileChannel partLock;
    private FileChannel manifest;
    private final Set<String> reused = new TreeSet<>();
    private int finishedNow;
    private boolean switched;
    private boolean abandoned;
    private boolean created;
    /** Whether this run took its part of the staged plan (only then may it remove the staging folder). */
    private boolean joined;

    private StagedPlan(Path out, Part part, Stamp stamp, Predicate<String> earlierCheckpointFile, Predicate<String> marksComplete, boolean fsync) {
        this.out = out;
        this.staging = out.resolve(OutputFolder.STAGING);
        this.part = part;
        this.stamp = stamp;
        this.earlierCheckpointFile = earlierCheckpointFile;
        this.marksComplete = marksComplete;
        this.fsync = fsync;
    }

    /**
     * Joins (or starts) the plan staged in {@code out} as {@code part}, holding the folder lock until
     * {@link #writing()}: finishes a switch an interrupted run left, refuses a folder that holds another plan's
     * live parts, another checkpoint (without {@code overwrite}) or a running copy of this part; with
     * {@code resume}, checks this part's finished files and keeps those that are intact.
     */
    public static StagedPlan open(Path out, boolean overwrite, boolean resume, List<Path> inputs, Predicate<String> earlierCheckpointFile,
            Predicate<String> marksComplete, boolean fsync, Stamp stamp, Part part) {
        StagedPlan plan = new StagedPlan(out, part, stamp, earlierCheckpointFile, marksComplete, fsync);
        try {
            OutputFolder.requireApart(out, inputs);
            plan.created = !Files.exists(out);
            Files.createDirectories(out);
            plan.lockFolder();
            try {
                plan.join(overwrite, resume);
            } catch (RuntimeException | IOException e) {
                plan.close();
                throw e;
            }
            return plan;
        } catch (IOException e) {
            throw new MoeportException(out + ": cannot prepare output folder (" + IoErrors.why(e) + ")", e);
        }
    }

    private void lockFolder() throws IOException {
        FileChannel lock = FileChannel.open(out.resolve(OutputFolder.LOCK), StandardOpenOption.CREATE, StandardOpenOption.WRITE);
        long deadline = System.currentTimeMillis() + (part.isWhole() ? 0 : folderLockWaitMillis);
        try {
            // Parts hold the folder lock only to join or to switch: a part waits its turn; a whole run does not.
            while (tryLock(lock) == null) {
                if (System.currentTimeMillis() >= deadline) {
                    throw new MoeportException(out + ": another moeport run is writing to this folder");
                }
                Thread.sleep(200);
            }
        } catch (InterruptedException e) {
            lock.close();
            Thread.currentThread().interrupt();
            throw new MoeportException(out + ": interrupted while waiting for the folder's lock");
        } catch (IOException | RuntimeException e) {
            lock.close();
            if (e instanceof IOException io) {
                throw new MoeportException(out.resolve(OutputFolder.LOCK) + ": cannot lock (" + IoErrors.why(io) + "); parts of a plan"
                        + " coordinate through file locks: the shared file system must support them (Lustre: mount with -o flock)", io);
            }
            throw e;
        }
        folderLock = lock;
    }

    /** The lock, or null where another process (or another channel of this one) holds it. */
    private static FileLock tryLock(FileChannel channel) throws IOException {
        try {
            return channel.tryLock();
        } catch (OverlappingFileLockException e) {
            return null;
        }
    }

    private void releaseFolderLock() {
        if (folderLock != null) {
            try {
                folderLock.close();
                if (part.isWhole() || switched) {
                    // Parts share the lock file until the plan is complete; a part arriving later finds a finished folder.
                    Files.deleteIfExists(out.resolve(OutputFolder.LOCK));
                }
            } catch (IOException e) {
                // The lock file is hidden; the next run takes the lock again.
            }
            folderLock = null;
        }
    }

    private void join(boolean overwrite, boolean resume) throws IOException {
        OutputFolder.cleanLeftovers(out, false);
        Stamp staged = Files.exists(staging) ? readStamp(staging) : null;
        String difference = staged == null ? "no plan was recorded" : stamp.differenceFrom(staged);
        if (Files.exists(staging) && (difference != null || part.isWhole() && !resume)) {
            Set<String> live = liveParts(staging);
            if (!live.isEmpty()) {
                throw new MoeportException(staged != null && staged.parts != stamp.parts
                        ? out + ": parts of a plan split into " + staged.parts + " are writing into this folder; this run is part " + part
                                + " (give every part the same --part count)"
                        : out + ": parts of another plan are writing into this folder (" + difference + "); give each plan its own --out");
            }
            if (staged != null && staged.parts > 1 && difference != null) {
                // Parts that ended wait for the others: their files are kept, never taken for a dead run's leftovers.
                throw new MoeportException(out + ": holds the unfinished parts of another plan (" + difference + "); finish it (run its"
                        + " missing parts, then 'moeport finalize " + out + "' if none completes it), or remove " + staging + " to start over");
            }
            if (resume && staged != null && difference != null) {
                throw new MoeportException(out + ": --resume: cannot reuse the interrupted run's files: " + difference
                        + "; run without --resume to start over");
            }
            OutputFolder.deleteTree(staging);
            Warnings.warn(out + ": removed the leftovers of an interrupted run (" + OutputFolder.STAGING + ")");
        }
        if (!Files.exists(staging)) {
            if (!overwrite && OutputFolder.names(out).stream().anyMatch(n -> !n.equals(OutputFolder.LOCK))) {
                throw new MoeportException(out + ": output folder exists and is not empty (give --overwrite to replace its checkpoint)");
            }
            Files.createDirectory(staging);
            writeAtomically(staging.resolve(PLAN), stamp.text());
        }
        Path lockFile = staging.resolve(".moeport-part-" + part.index() + "-of-" + part.count() + ".lock");
        partLock = FileChannel.open(lockFile, StandardOpenOption.CREATE, StandardOpenOption.READ, StandardOpenOption.WRITE);
        FileLock held;
        try {
            held = partLock.tryLock();
        } catch (OverlappingFileLockException e) {
            held = null;
        }
        if (held == null) {
            String holder = Files.readString(lockFile).strip();
            partLock.close();
            partLock = null;
            throw new MoeportException(out + ": part " + part + " of this plan is already running" + (holder.isEmpty() ? "" : " (" + holder + ")")
                    + "; wait for it to end, or stop it, before running it again");
        }
        partLock.truncate(0).write(ByteBuffer.wrap(("process " + ProcessHandle.current().pid() + " on " + host() + "\n")
                .getBytes(StandardCharsets.UTF_8)), 0);
        keepOrRemoveOwnFiles(resume);
        joined = true;
    }

    /** With --resume, keeps this part's recorded files that are intact; otherwise removes what an earlier run of it left. */
    private void keepOrRemoveOwnFiles(boolean resume) throws IOException {
        Path manifestFile = manifestOf(part.index());
        Map<String, Finished> recorded = resume ? readManifest(manifestFile) : Map.of();
        StringBuilder kept = new StringBuilder();
        for (PlannedFile f : stamp.files) {
            if (f.part != part.index()) {
                continue;
            }
            Finished done = recorded.get(f.path);
            Path file = staging.resolve(f.path);
            if (done != null && Files.isRegularFile(file) && Files.size(file) == done.size && checksum(file) == done.crc) {
                reused.add(f.path);
                kept.append(done.line());
            } else {
                Files.deleteIfExists(file);
            }
        }
        writeAtomically(manifestFile, kept.toString());
        manifest = FileChannel.open(manifestFile, StandardOpenOption.WRITE, StandardOpenOption.APPEND);
    }

    /** Where the run writes its files, laid out as they will be in the output folder. */
    public Path staging() {
        return staging;
    }

    /** This part's files that a run before it finished and that are intact, by path in the folder ({@code --resume}). */
    public Set<String> reused() {
        return reused;
    }

    /** Whether the checkpoint's other files (index, configs) still need staging: this part is the first to join. */
    public boolean needsOtherFiles() {
        return !Files.exists(staging.resolve(READY));
    }

    /** The other files are staged. */
    public void otherFilesStaged() {
        try {
            writeAtomically(staging.resolve(READY), "");
        } catch (IOException e) {
            throw new MoeportException(staging + ": cannot write (" + IoErrors.why(e) + ")", e);
        }
    }

    /** The part now writes its own files: other parts may join and finish meanwhile. */
    public void writing() {
        if (!part.isWhole()) {
            releaseFolderLock();
        }
    }

    /**
     * Records a file of this part, renamed into place in the staging folder, with its size and checksum: the one the
     * writer computed on the way when it did ({@code crc32c}), else read back.
     */
    public synchronized void finished(Path file, java.util.OptionalLong crc32c) {
        String path = staging.relativize(file).toString().replace('\\', '/');
        try {
            Finished done = new Finished(path, Files.size(file), crc32c.isPresent() ? crc32c.getAsLong() : checksum(file));
            manifest.write(ByteBuffer.wrap(done.line().getBytes(StandardCharsets.UTF_8)));
            finishedNow++;
        } catch (IOException e) {
            throw new MoeportException(file + ": cannot record the finished file (" + IoErrors.why(e) + ")", e);
        }
    }

    /** How many of this part's files this run wrote (not reused). */
    public int writtenCount() {
        return finishedNow;
    }

    /** What {@link #complete()} found. */
    public record Completion(boolean switched, List<String> missing) {}

    /**
     * After this part's files are all written: if every file of the plan is finished, switches the checkpoint
     * in (taking the folder lock: the last of several parts to end does this); otherwise says what is left.
     */
    public synchronized Completion complete() {
        if (abandoned) {
            throw new MoeportException(out + ": the run was interrupted before its checkpoint was switched in");
        }
        beforeComplete.run();
        try {
            if (folderLock == null) {
                try {
                    lockFolder();
                } catch (MoeportException e) {
                    throw new MoeportException(out + ": part " + part + " finished its files but cannot complete the checkpoint: "
                            + e.getMessage().substring(e.getMessage().indexOf(": ") + 2) + "; run 'moeport finalize " + out
                            + "' once every part has ended", e);
                }
            }
            Stamp staged = Files.exists(staging) ? readStamp(staging) : null;
            if (staged == null || stamp.differenceFrom(staged) != null) {
                return new Completion(false, List.of()); // another part switched it in already
            }
            List<String> missing = missing(staging, stamp);
            if (missing.isEmpty()) {
                OutputFolder.switchIn(out, earlierCheckpointFile, marksComplete, fsync);
                switched = true;
            }
            return new Completion(switched, missing);
        } catch (IOException e) {
            throw new MoeportException(out + ": cannot complete the checkpoint (" + IoErrors.why(e) + ")", e);
        } finally {
            if (!part.isWhole()) {
                releaseFolderLock();
            }
        }
    }

    /** The files of the plan that no part has recorded as finished, or whose size differs from the record ("path (part I)"). */
    private static List<String> missing(Path staging, Stamp stamp) throws IOException {
        Map<Integer, Map<String, Finished>> manifests = new LinkedHashMap<>();
        List<String> missing = new ArrayList<>();
        for (PlannedFile f : stamp.files) {
            Map<String, Finished> done = manifests.computeIfAbsent(f.part,
                    p -> readManifest(staging.resolve(".moeport-part-" + p + "-of-" + stamp.parts + ".manifest")));
            Finished record = done.get(f.path);
            Path file = staging.resolve(f.path);
            if (record == null || !Files.isRegularFile(file) || Files.size(file) != record.size) {
                missing.add(f.path + " (part " + f.part + "/" + stamp.parts + ")");
            }
        }
        return missing;
    }

    /**
     * {@code moeport finalize}: switches in a plan whose parts have all ended, when none could (a part that could
     * not take the folder lock). Refused, leaving everything as it is, while files are missing or parts still run.
     */
    public static void finalizeFolder(Path out, Predicate<String> earlierCheckpointFile, Predicate<String> marksComplete) {
        Path staging = out.resolve(OutputFolder.STAGING);
        if (!Files.isDirectory(out)) {
            throw new MoeportException(out + ": no such folder");
        }
        try (FileChannel lock = FileChannel.open(out.resolve(OutputFolder.LOCK), StandardOpenOption.CREATE, StandardOpenOption.WRITE)) {
            if (tryLock(lock) == null) {
                throw new MoeportException(out + ": a moeport run holds this folder; try again when it ends");
            }
            if (Files.exists(out.resolve(OutputFolder.JOURNAL))) {
                OutputFolder.cleanLeftovers(out, false);
                return;
            }
            Stamp stamp = Files.exists(staging) ? readStamp(staging) : null;
            if (stamp == null) {
                throw new MoeportException(out + ": nothing to finalize: no plan is staged in this folder (" + OutputFolder.STAGING + ")");
            }
            List<String> missing = missing(staging, stamp);
            if (!missing.isEmpty()) {
                Set<String> live = liveParts(staging);
                throw new MoeportException(out + ": " + missing.size() + " of " + stamp.files.size() + " files are not finished yet: "
                        + String.join(", ", missing.subList(0, Math.min(5, missing.size()))) + (missing.size() > 5 ? ", ..." : "")
                        + (live.isEmpty() ? "; run the parts that wrote them (with --resume) first" : "; parts " + String.join(", ", live)
                        + " are still running"));
            }
            if (!Files.exists(staging.resolve(READY))) {
                throw new MoeportException(out + ": the checkpoint's other files (index, configs) were not staged; rerun any part with --resume");
            }
            OutputFolder.switchIn(out, earlierCheckpointFile, marksComplete, false);
            Files.deleteIfExists(out.resolve(OutputFolder.LOCK));
        } catch (IOException e) {
            throw new MoeportException(out + ": cannot finalize (" + IoErrors.why(e) + ")", e);
        }
    }

    /**
     * For a Ctrl-C or kill -TERM hook: unless the switch has begun, runs {@code closeWriter} (which removes the
     * partial files). Files this part finished stay for {@code --resume}, and so does the whole staging folder of
     * a plan in parts; a whole run that finished none removes its staging folder. Returns what it did, or null.
     */
    public synchronized String abandon(Runnable closeWriter) {
        if (switched || abandoned || Files.exists(out.resolve(OutputFolder.JOURNAL))) {
            return null;
        }
        abandoned = true;
        closeWriter.run();
        int kept = finishedNow + reused.size();
        if (part.isWhole() && kept == 0) {
            OutputFolder.deleteTree(staging);
            return "the partial output in " + out + " was removed";
        }
        return kept + " finished file(s) of part " + part + " kept in " + staging + ": rerun it with --resume to reuse them";
    }

    /**
     * Releases the locks. A whole run that did not switch removes its staging folder (as before parts existed),
     * unless it was interrupted with finished files kept for {@code --resume}.
     */
    @Override
    public synchronized void close() {
        closeQuietly(manifest);
        if (part.isWhole() && joined && !switched && !abandoned && folderLock != null && !Files.exists(out.resolve(OutputFolder.JOURNAL))) {
            OutputFolder.deleteTree(staging);
        }
        closeQuietly(partLock);
        releaseFolderLock();
        if (!created) {
            return;
        }
        try (Stream<Path> s = Files.list(out)) {
            if (s.findAny().isEmpty()) {
                Files.deleteIfExists(out);
            }
        } catch (IOException e) {
            // Best effort: an empty folder does not look like a checkpoint.
        }
    }

    private static void closeQuietly(FileChannel channel) {
        try {
            if (channel != null) {
                channel.close();
            }
        } catch (IOException e) {
            // Hidden bookkeeping; nothing to lose.
        }
    }

    /** The parts ("I/N") whose lock in {@code staging} is held by a running process. */
    static Set<String> liveParts(Path staging) {
        Set<String> live = new TreeSet<>();
        if (!Files.isDirectory(staging)) {
            return live;
        }
        try (Stream<Path> s = Files.list(staging)) {
            for (Path p : s.toList()) {
                Matcher m = PART_LOCK.matcher(p.getFileName().toString());
                if (!m.matches()) {
                    continue;
                }
                try (FileChannel c = FileChannel.open(p, StandardOpenOption.WRITE)) {
                    FileLock l = c.tryLock();
                    if (l == null) {
                        live.add(m.group(1) + "/" + m.group(2));
                    }
                } catch (OverlappingFileLockException e) {
                    live.add(m.group(1) + "/" + m.group(2));
                } catch (NoSuchFileException e) {
                    // gone meanwhile
                }
            }
        } catch (IOException e) {
            throw new MoeportException(staging + ": cannot read (" + IoErrors.why(e) + ")", e);
        }
        return live;
    }

    private Path manifestOf(int index) {
        return staging.resolve(".moeport-part-" + index + "-of-" + part.count() + ".manifest");
    }

    private static Stamp readStamp(Path staging) throws IOException {
        Path file = staging.resolve(PLAN);
        return Files.exists(file) ? Stamp.parse(Files.readAllLines(file, StandardCharsets.UTF_8)) : null;
    }

    /** A manifest's records; a line cut short by a kill (no newline yet) is not one. */
    private static Map<String, Finished> readManifest(Path file) {
        Map<String, Finished> records = new LinkedHashMap<>();
        try {
            if (!Files.exists(file)) {
                return records;
            }
            String text = Files.readString(file, StandardCharsets.UTF_8);
            for (String line : text.substring(0, text.lastIndexOf('\n') + 1).split("\n")) {
                String[] f = line.split("\t");
                if (f.length == 3) {
                    records.put(f[0], new Finished(f[0], Long.parseLong(f[1]), Long.parseUnsignedLong(f[2], 16)));
                }
            }
        } catch (IOException | NumberFormatException e) {
            throw new MoeportException(file + ": cannot read the manifest (" + e.getMessage() + ")", e);
        }
        return records;
    }

    /** CRC-32C of a whole file, read in large blocks (the JDK computes it with the CPU's CRC instructions). */
    static long checksum(Path file) throws IOException {
        CRC32C crc = new CRC32C();
        ByteBuffer buffer = ByteBuffer.allocateDirect(8 << 20);
        try (FileChannel c = FileChannel.open(file, StandardOpenOption.READ)) {
            while (c.read(buffer) >= 0) {
                buffer.flip();
                crc.update(buffer);
                buffer.clear();
            }
        }
        return crc.getValue();
    }

    private static void writeAtomically(Path target, String text) throws IOException {
        Path partial = target.resolveSibling(target.getFileName() + ".tmp-" + ProcessHandle.current().pid());
        Files.writeString(partial, text, StandardCharsets.UTF_8);
        Files.move(partial, target, StandardCopyOption.ATOMIC_MOVE, StandardCopyOption.REPLACE_EXISTING);
    }

    private static String host() {
        try {
            return java.net.InetAddress.getLocalHost().getHostName();
        } catch (IOException e) {
            return "this host";
        }
    }
}
