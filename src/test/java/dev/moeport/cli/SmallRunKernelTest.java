package dev.moeport.cli;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertTrue;
import static org.junit.jupiter.api.Assumptions.assumeTrue;

import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import dev.moeport.quant.QuantKernel;
import dev.moeport.quant.QuantKernels;
import java.nio.file.Files;
import java.nio.file.Path;
import org.junit.jupiter.api.AfterEach;
import org.junit.jupiter.api.BeforeEach;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/**
 * A run that reads less than {@link QuantKernels#VECTORS_FROM} through the kernels takes the scalar one where the JVM
 * chose the Vector API one by itself, says so, and writes the same bytes. The build forces the Vector API kernel for
 * the other tests ({@code -Dmoeport.kernel=panama}): these clear that setting while they run.
 */
class SmallRunKernelTest {
    private static final String PROPERTY = "moeport.kernel";

    @TempDir
    Path tmp;

    private String forced;

    @BeforeEach
    void clearTheForcedKernel() {
        forced = System.clearProperty(PROPERTY);
    }

    @AfterEach
    void restoreIt() {
        if (forced != null) {
            System.setProperty(PROPERTY, forced);
        } else {
            System.clearProperty(PROPERTY);
        }
    }

    private static QuantKernel panama() {
        try {
            return QuantKernels.panama();
        } catch (IllegalStateException e) {
            assumeTrue(false, "no Vector API kernel here: " + e.getMessage());
            return null;
        }
    }

    @Test
    void belowTheThresholdTheVectorKernelGivesWayToTheScalarOneUnlessForced() {
        QuantKernel panama = panama();
        QuantKernels.ForRun small = QuantKernels.forRun(panama, QuantKernels.VECTORS_FROM - 1);
        assertEquals("scalar", small.kernel().name());
        assertTrue(small.description().startsWith("scalar (511 MB through the kernels: below 512 MB"), small.description());
        assertSame(panama, QuantKernels.forRun(panama, QuantKernels.VECTORS_FROM).kernel());
        QuantKernel scalar = QuantKernels.scalar();
        assertSame(scalar, QuantKernels.forRun(scalar, 0).kernel());
        System.setProperty(PROPERTY, "panama");
        assertSame(panama, QuantKernels.forRun(panama, 0).kernel(), "forced, the Vector API kernel runs however small the run");
    }

    /** End to end: the same NVFP4 bytes from the scalar kernel the small run takes and from the forced Vector API one. */
    @Test
    void aSmallExportSaysItsKernelAndWritesTheBytesTheVectorKernelWrites() throws Exception {
        assumeTrue(QuantKernels.describe().startsWith("Vector API"), "the JVM chose the scalar kernel itself: " + QuantKernels.describe());
        Path synth = CliRun.succeeding("synth", "--preset", "tiny", "--out", tmp.resolve("synth").toString(), "--no-progress");
        String[] export = {"export", "--in", synth.resolve("mcore").toString(), "--hf-config", synth.resolve("hf").toString(),
            "--format", "nvfp4", "--json", "--no-progress", "--out"};
        CliRun small = run(export, tmp.resolve("small"));
        JsonNode summary = new ObjectMapper().readTree(small.out());
        assertTrue(summary.get("kernel").asText().startsWith("scalar ("), summary.toString());
        assertTrue(summary.get("kernel").asText().contains("MB through the kernels"), summary.toString());
        System.setProperty(PROPERTY, "panama");
        CliRun vectors = run(export, tmp.resolve("vectors"));
        assertTrue(new ObjectMapper().readTree(vectors.out()).get("kernel").asText().startsWith("Vector API"), vectors.out());
        java.util.List<Path> shards;
        try (var files = Files.list(tmp.resolve("small"))) {
            shards = files.filter(p -> p.toString().endsWith(".safetensors")).toList();
        }
        assertTrue(!shards.isEmpty(), "no shards written");
        for (Path f : shards) {
            assertArrayEquals(Files.readAllBytes(f), Files.readAllBytes(tmp.resolve("vectors").resolve(f.getFileName())), f.getFileName().toString());
        }
    }

    private static CliRun run(String[] args, Path out) {
        String[] all = java.util.Arrays.copyOf(args, args.length + 1);
        all[args.length] = out.toString();
        CliRun r = CliRun.of(all);
        assertEquals(0, r.code(), r.err());
        return r;
    }
}
