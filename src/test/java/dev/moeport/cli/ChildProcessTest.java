package dev.moeport.cli;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assertions.fail;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import dev.moeport.format.safetensors.SafetensorsWriter;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.concurrent.TimeUnit;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import java.util.stream.Stream;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** moeport in a JVM of its own, as users run it: a tiny heap, a size limit on files. */
class ChildProcessTest {
    @TempDir
    Path tmp;

    record Result(int code, String out, String err) {}

    /** Runs the CLI in a child JVM under bash, with {@code prefix} before exec (e.g. a ulimit). */
    private static Result moeport(String prefix, String heap, String... args) throws Exception {
        return moeport(prefix, List.of("-Xmx" + heap, "--add-modules", "jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED"), args);
    }

    private static Result moeport(String prefix, List<String> jvmOptions, String... args) throws Exception {
        return moeport(prefix, List.of(), jvmOptions, args);
    }

    /** As above, the JVM started by {@code wrapper} (e.g. strace) when it is not empty. */
    private static Result moeport(String prefix, List<String> wrapper, List<String> jvmOptions, String... args) throws Exception {
        String java = ProcessHandle.current().info().command().orElse("java");
        List<String> command = new ArrayList<>(wrapper);
        command.add(java);
        command.addAll(jvmOptions);
        command.addAll(List.of("-cp", System.getProperty("java.class.path"), Main.class.getName()));
        command.addAll(List.of(args));
        StringBuilder line = new StringBuilder(prefix + " exec");
        for (String c : command) {
            line.append(" '").append(c.replace("'", "'\\''")).append('\'');
        }
        // Output to files, not pipes: reading a pipe to its end would wait for a hung child, and the
        // time limit below would never fire.
        Path out = Files.createTempFile("moeport-child", ".out");
        Path err = Files.createTempFile("moeport-child", ".err");
        try {
            Process p = new ProcessBuilder("bash", "-c", line.toString())
                    .redirectOutput(out.toFile()).redirectError(err.toFile()).start();
            if (!p.waitFor(120, TimeUnit.SECONDS)) {
                p.descendants().forEach(ProcessHandle::destroyForcibly);
                p.destroyForcibly();
                fail("moeport " + String.join(" ", args) + " still ran after 120 s; its error output: " + Files.readString(err));
            }
            return new Result(p.exitValue(), Files.readString(out), Files.readString(err));
        } finally {
            Files.delete(out);
            Files.delete(err);
        }
    }

    private static String errorLines(String err) {
        return String.join("\n", err.lines().filter(l -> !l.startsWith("WARNING: Using incubator modules")).toList());
    }

    @Test
    void exportsHundredsOfMegabytesWithATinyHeap() throws Exception {
        Path synth = tmp.resolve("synth");
        Result s = moeport("", "48m", "synth", "--preset", "small", "--out", synth.toString());
        assertEquals(0, s.code(), s.err());
        // ~280 MB of tensors through a 48 MB heap: the bytes never enter it.
        Result e = moeport("", "48m", "export", "--in", synth.resolve("mcore").toString(), "--hf-config", synth.resolve("hf").toString(),
                "--out", tmp.resolve("out").toString(), "--format", "nvfp4", "--max-shard-size", "100MB");
        assertEquals(0, e.code(), e.err());
        assertTrue(e.out().contains("exported 390 tensors"), e.out());
    }

    @Test
    void aFullDiskIsOneLineAndLeavesNothingThatLooksFinished() throws Exception {
        Path synth = tmp.resolve("synth");
        assertEquals(0, moeport("", "256m", "synth", "--preset", "tiny", "--out", synth.toString()).code());
        Path out = tmp.resolve("out");
        // A 1 MB limit on any file this process writes: the 6 MB shard cannot be written.
        Result r = moeport("ulimit -f 1024;", "256m", "export", "--in", synth.resolve("mcore").toString(), "--hf-config",
                synth.resolve("hf").toString(), "--out", out.toString());
        assertEquals(1, r.code(), r.out() + r.err());
        String err = errorLines(r.err());
        assertEquals(1, err.lines().count(), err);
        assertTrue(err.startsWith("moeport: error: ") && (err.contains("not enough disk space") || err.contains("File too large")), err);
        try (Stream<Path> files = Files.exists(out) ? Files.list(out) : Stream.empty()) {
            List<Path> left = files.toList();
            assertFalse(left.stream().anyMatch(p -> p.getFileName().toString().endsWith(".safetensors")), "no shard: " + left);
            assertFalse(left.stream().anyMatch(p -> p.getFileName().toString().equals("config.json")), "no config: " + left);
            assertTrue(left.stream().allMatch(SafetensorsWriter::isPartial), "only partial files, if any: " + left);
        }
    }

    @Test
    void withoutTheVectorApiOrNativeAccessItWarnsOnceAndStillWorks() throws Exception {
        Path synth = tmp.resolve("synth");
        assertEquals(0, moeport("", "256m", "synth", "--preset", "tiny", "--out", synth.toString()).code());
        Result r = moeport("", List.of("-Xmx256m"), "export", "--in", synth.resolve("mcore").toString(), "--hf-config",
                synth.resolve("hf").toString(), "--out", tmp.resolve("out").toString(), "--format", "nvfp4");
        assertEquals(0, r.code(), r.err());
        List<String> warnings = r.err().lines().filter(l -> l.startsWith("moeport: warning:")).toList();
        assertEquals(2, warnings.size(), r.err());
        assertTrue(warnings.stream().anyMatch(w -> w.contains("Vector API is not available")), r.err());
        assertTrue(warnings.stream().anyMatch(w -> w.contains("native calls are off")), r.err());
        // The scalar kernels give the same bytes.
        Result withSimd = moeport("", "256m", "export", "--in", synth.resolve("mcore").toString(), "--hf-config", synth.resolve("hf").toString(),
                "--out", tmp.resolve("simd").toString(), "--format", "nvfp4");
        assertEquals(0, withSimd.code(), withSimd.err());
        dev.moeport.testing.TestCheckpoints.assertSameTensors(tmp.resolve("simd"), tmp.resolve("out"));
    }

    @Test
    void aBadKernelSettingIsOneLine() throws Exception {
        Result r = moeport("", List.of("-Xmx64m", "--add-modules", "jdk.incubator.vector", "-Dmoeport.kernel=avx9"), "--version");
        assertEquals(1, r.code(), r.out() + r.err());
        assertEquals("moeport: error: -Dmoeport.kernel must be scalar or panama, not 'avx9'", errorLines(r.err()));
        Result forced = moeport("", List.of("-Xmx64m", "-Dmoeport.kernel=panama"), "--version");
        assertEquals(1, forced.code(), forced.out() + forced.err());
        assertEquals("moeport: error: -Dmoeport.kernel=panama cannot run here: the Vector API is not available"
                + " (run the JVM with --add-modules jdk.incubator.vector)", errorLines(forced.err()));
    }

    @Test
    void versionNamesTheKernelAndItsWidth() throws Exception {
        Result capped = moeport("", List.of("-Xmx64m", "--add-modules", "jdk.incubator.vector", "-XX:MaxVectorSize=32"), "--version");
        assertEquals(0, capped.code(), capped.err());
        assertTrue(capped.out().contains("kernel: Vector API, 256-bit vectors (8 floats)"), capped.out());
        Result scalar = moeport("", List.of("-Xmx64m", "--add-modules", "jdk.incubator.vector", "-Dmoeport.kernel=scalar"), "--version");
        assertTrue(scalar.out().contains("kernel: scalar (-Dmoeport.kernel=scalar)"), scalar.out());
    }

    /**
     * {@code --fsync} seen where it happens, in the system calls (strace): every file of the output
     * is flushed while still a partial file in the staging folder, then that folder, the switch's journal
     * and the output folder, whose entries the renames changed; without it, nothing is.
     */
    @Test
    void fsyncFlushesEveryOutputFileAndTheFolder() throws Exception {
        assumeTrue(new ProcessBuilder("strace", "-f", "-qq", "-o", "/dev/null", "true").start().waitFor() == 0,
                "strace cannot run here");
        Path synth = tmp.resolve("synth");
        assertEquals(0, moeport("", "256m", "synth", "--preset", "tiny", "--out", synth.toString()).code());
        Path hf = tmp.resolve("hf");
        Path unsynced = tmp.resolve("hf-unsynced");
        for (Path out : List.of(hf, unsynced)) {
            List<String> synced = fsyncedPaths(out.equals(hf), "export", "--in", synth.resolve("mcore").toString(), "--hf-config",
                    synth.resolve("hf").toString(), "--out", out.toString(), "--max-shard-size", "2MB");
            List<String> expected = new ArrayList<>(stagedFsyncs(out, ""));
            expected.addAll(List.of(out.resolve(".moeport-switch.partial").toString(), out.toString()));
            assertEquals(out.equals(hf) ? expected.stream().sorted().toList() : List.of(), synced);
        }
        Path megatron = tmp.resolve("megatron");
        List<String> synced = fsyncedPaths(true, "import", "--in", hf.toString(), "--out", megatron.toString());
        for (String file : stagedFsyncs(megatron, "iter_0000000")) {
            assertTrue(synced.contains(file), file + " not flushed: " + synced);
        }
    }

    /**
     * What a run with --fsync must flush for the folder {@code dir} of its finished output {@code out}: the
     * partial file of each file in it, as staged, and the staged folder.
     */
    private static List<String> stagedFsyncs(Path out, String dir) throws Exception {
        Path staged = out.resolve(".moeport-staging").resolve(dir);
        List<String> expected = new ArrayList<>();
        try (Stream<Path> files = Files.list(out.resolve(dir))) {
            files.filter(Files::isRegularFile).forEach(f -> expected.add(staged.resolve("." + f.getFileName() + ".partial").toString()));
        }
        assertTrue(expected.size() > 2, expected.toString());
        expected.add(staged.toString());
        return expected;
    }

    /** The paths under the output folder that the run fsyncs, sorted. */
    private List<String> fsyncedPaths(boolean fsync, String... args) throws Exception {
        Path trace = tmp.resolve("strace.out");
        List<String> command = new ArrayList<>(List.of(args));
        if (fsync) {
            command.add("--fsync");
        }
        Result r = moeport("", List.of("strace", "-f", "-qq", "-y", "-e", "trace=fsync,fdatasync", "-e", "signal=none", "-o",
                trace.toString()), List.of("-Xmx256m", "--add-modules", "jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED"),
                command.toArray(String[]::new));
        assertEquals(0, r.code(), r.err());
        // Lines like: 1234 fsync(9</tmp/x/out/.model.safetensors.partial>) = 0, or, when worker threads flush their
        // shards at once, 1234 fsync(9</tmp/x/out/.model.safetensors.partial> <unfinished ...> and its "resumed" line later.
        Pattern call = Pattern.compile("f(?:data)?sync\\(\\d+<(.*?)>(?:\\) += 0| <unfinished \\.\\.\\.>)");
        List<String> synced = new ArrayList<>();
        for (String line : Files.readAllLines(trace)) {
            Matcher m = call.matcher(line);
            if (m.find() && m.group(1).startsWith(tmp.toString()) && !m.group(1).startsWith(tmp.resolve("synth").toString())) {
                synced.add(m.group(1));
            }
        }
        Files.delete(trace);
        return synced.stream().distinct().sorted().toList();
    }

    @Test
    void anUnreadableInputIsOneLine() throws Exception {
        Path bad = Files.writeString(tmp.resolve("bad.safetensors"), "not a safetensors file");
        Result r = moeport("", "64m", "inspect", bad.toString());
        assertEquals(1, r.code());
        String err = errorLines(r.err());
        assertEquals(1, err.lines().count(), err);
        assertTrue(err.contains("bad.safetensors: header length"), err);
    }


    /** A legal safetensors file of {@code n} one-byte tensors: a header of about 100 bytes a tensor. */
    private static Path manyTensors(Path file, int n) throws Exception {
        StringBuilder header = new StringBuilder("{");
        for (int i = 0; i < n; i++) {
            header.append(i == 0 ? "" : ",").append("\"model.layers.").append(i).append(".mlp.experts.weight\":{\"dtype\":\"U8\","
                    + "\"shape\":[1],\"data_offsets\":[").append(i).append(',').append(i + 1).append("]}");
        }
        return dev.moeport.testing.RawSafetensors.write(file, header.append('}').toString(), n);
    }

    @Test
    void aLargeHeaderNeedsLittleHeapAndTooLittleHeapSaysWhatToRaise() throws Exception {
        // issue 17 item 6: a header parsed as one JSON tree took ~30 times its size. 200,000 tensors (a 19 MB
        // header) ran out of memory with 128 MB of heap; streamed, 96 MB do.
        Path file = manyTensors(tmp.resolve("many.safetensors"), 200_000);
        Result r = moeport("", "96m", "inspect", file.toString());
        assertEquals(0, r.code(), r.err());
        assertTrue(r.out().contains("total: 200000 tensors"), r.out());
        Result starved = moeport("", "24m", "inspect", file.toString());
        assertEquals(1, starved.code(), starved.err());
        String err = errorLines(starved.err());
        assertEquals(1, err.lines().count(), err);
        // the heap the JVM reports may be a survivor space short of -Xmx
        assertTrue(err.matches("moeport: error: out of memory \\(.*\\) with a Java heap of 2\\d MiB: raise it through JAVA_OPTS,"
                + " e.g. JAVA_OPTS=-Xmx[45]\\dm .*"), err);
    }

    @Test
    void anInputThatShrinksDuringAQuantizingExportIsOneLineNotACrash() throws Exception {
        // issue 17 item 2: Vector API loads from a mapping whose file shrank crashed the JVM (SIGBUS, hs_err)
        // in 3 of 13 trials. Each trial truncates the largest input shard once the export writes its output.
        Path synth = tmp.resolve("synth");
        assertEquals(0, moeport("", "256m", "synth", "--preset", "small", "--out", synth.toString()).code());
        Path pristine = synth.resolve("mcore");
        int interrupted = 0;
        for (int trial = 0; trial < 3; trial++) {
            Path input = tmp.resolve("in" + trial);
            copyFolder(pristine, input);
            Path largest;
            try (Stream<Path> files = Files.list(input)) {
                largest = files.filter(f -> f.toString().endsWith(".safetensors")).max(java.util.Comparator.comparingLong(f -> f.toFile().length()))
                        .orElseThrow();
            }
            Path out = tmp.resolve("out" + trial);
            String javaCommand = ProcessHandle.current().info().command().orElse("java");
            Process p = new ProcessBuilder(javaCommand, "-Xmx256m", "--add-modules", "jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED",
                    "-XX:ErrorFile=" + tmp.resolve("hs_err_%p.log"), "-cp", System.getProperty("java.class.path"), Main.class.getName(),
                    "export", "--in", input.toString(), "--hf-config", synth.resolve("hf").toString(), "--out", out.toString(),
                    "--format", "nvfp4", "--no-progress")
                    .redirectOutput(ProcessBuilder.Redirect.DISCARD).redirectError(tmp.resolve("err" + trial).toFile()).start();
            while (p.isAlive() && !(Files.isDirectory(out) && hasFiles(out))) {
                Thread.sleep(5);
            }
            try (var channel = java.nio.channels.FileChannel.open(largest, java.nio.file.StandardOpenOption.WRITE)) {
                channel.truncate(channel.size() / 3);
            }
            assertTrue(p.waitFor(120, TimeUnit.SECONDS));
            String err = errorLines(Files.readString(tmp.resolve("err" + trial)));
            try (Stream<Path> crashes = Files.list(tmp)) {
                assertFalse(crashes.anyMatch(f -> f.getFileName().toString().startsWith("hs_err")), "the JVM crashed: " + err);
            }
            if (p.exitValue() == 0) {
                continue; // it finished before the truncation reached it
            }
            assertEquals(1, p.exitValue(), err);
            assertEquals(1, err.lines().count(), err);
            // before: "<out>/model.safetensors: cannot write tensor ... (Bad address)", blaming the output
            // now: the tensor and the input file it lies in
            assertTrue(err.startsWith("moeport: error: tensor '") && err.contains(" in " + largest + ": ")
                    && err.endsWith("could not be read: the file shrank or changed while moeport read it"), err);
            interrupted++;
            try (Stream<Path> left = Files.exists(out) ? Files.list(out) : Stream.empty()) {
                List<Path> files = left.toList();
                assertTrue(files.stream().allMatch(SafetensorsWriter::isPartial), "only partial files, if any: " + files);
            }
        }
        assertTrue(interrupted > 0, "no trial was interrupted by the truncation");
    }

    private static boolean hasFiles(Path dir) throws java.io.IOException {
        try (Stream<Path> s = Files.list(dir)) {
            return s.findAny().isPresent();
        }
    }

    private static void copyFolder(Path from, Path to) throws java.io.IOException {
        Files.createDirectories(to);
        try (Stream<Path> s = Files.list(from)) {
            for (Path f : s.toList()) {
                Files.copy(f, to.resolve(f.getFileName()));
            }
        }
    }
}
