package dev.moeport.io;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertFalse;
import static org.junit.jupiter.api.Assertions.assertTrue;

import dev.moeport.cli.CliRun;
import dev.moeport.testing.Shared;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Collections;
import java.util.List;
import java.util.OptionalLong;
import java.util.Random;
import java.util.function.Supplier;
import java.util.zip.CRC32;
import java.util.zip.CRC32C;
import java.util.zip.Checksum;
import org.junit.jupiter.api.Test;
import org.junit.jupiter.api.io.TempDir;

/** The CRC-32C and CRC-32 of a file from its writes equal the JDK's CRC32C and CRC32 of the file's bytes. */
class WrittenCrcTest {
    @TempDir
    Path tmp;

    private static long crc(byte[] bytes, int from, int to) {
        return crc(CRC32C::new, bytes, from, to);
    }

    private static long crc(Supplier<Checksum> kind, byte[] bytes, int from, int to) {
        Checksum c = kind.get();
        c.update(bytes, from, to - from);
        return c.getValue();
    }

    /** Each checksum written, with the JDK's own. */
    private static final List<Supplier<WrittenCrc>> WRITTEN = List.of(WrittenCrc::crc32c, WrittenCrc::crc32);
    private static final List<Supplier<Checksum>> JDK = List.of(CRC32C::new, CRC32::new);

    @Test
    void combiningTheCrcsOfTwoPartsIsTheCrcOfBoth() {
        Random random = new Random(7);
        for (int kind = 0; kind < WRITTEN.size(); kind++) {
            Supplier<Checksum> jdk = JDK.get(kind);
            for (int trial = 0; trial < 200; trial++) {
                byte[] bytes = new byte[random.nextInt(1 << (trial % 17)) + 1];
                random.nextBytes(bytes);
                int cut = random.nextInt(bytes.length + 1);
                int combined = WRITTEN.get(kind).get().combine((int) crc(jdk, bytes, 0, cut), (int) crc(jdk, bytes, cut, bytes.length),
                        bytes.length - cut);
                assertEquals(crc(jdk, bytes, 0, bytes.length), Integer.toUnsignedLong(combined),
                        jdk.get().getClass().getSimpleName() + " of length " + bytes.length + " cut at " + cut);
            }
        }
    }

    @Test
    void writesInAnyOrderGiveTheFilesCrc() {
        for (int kind = 0; kind < WRITTEN.size(); kind++) {
            writesInAnyOrderGiveTheFilesCrc(WRITTEN.get(kind), JDK.get(kind));
        }
    }

    private static void writesInAnyOrderGiveTheFilesCrc(Supplier<WrittenCrc> written, Supplier<Checksum> jdk) {
        Random random = new Random(11);
        byte[] file = new byte[1 << 20];
        random.nextBytes(file);
        List<int[]> regions = new ArrayList<>();
        for (int at = 0; at < file.length; ) {
            int n = Math.min(file.length - at, random.nextInt(70_000));
            regions.add(new int[] {at, n});
            at += n;
        }
        Collections.shuffle(regions, random);
        WrittenCrc crc = written.get();
        regions.parallelStream().forEach(r -> crc.record(r[0], r[1], (int) crc(jdk, file, r[0], r[0] + r[1])));
        assertEquals(OptionalLong.of(crc(jdk, file, 0, file.length)), crc.of(file.length));
        assertEquals(OptionalLong.empty(), crc.of(file.length + 1), "a file longer than its writes has a gap");
    }

    @Test
    void gapsAndOverlapsLeaveItUnknown() {
        WrittenCrc gap = WrittenCrc.crc32c();
        gap.record(0, 10, 0);
        gap.record(11, 10, 0);
        assertFalse(gap.of(21).isPresent());
        WrittenCrc overlap = WrittenCrc.crc32c();
        overlap.record(0, 10, 0);
        overlap.record(5, 10, 0);
        assertFalse(overlap.of(15).isPresent());
        assertEquals(20, gap.recorded(), "bytes recorded, the gap not among them");
        assertEquals(20, overlap.recorded(), "bytes recorded, the overlap twice");
        assertEquals(OptionalLong.of(0), WrittenCrc.crc32c().of(0), "no bytes: CRC 0");
    }

    /**
     * A part of a run leaves its manifest in the staging folder: every file it records has the CRC-32C of its bytes,
     * for both writers (safetensors shards and torch_dist data files).
     */
    @Test
    void manifestsHoldTheCrcsOfTheFilesAsWritten() throws Exception {
        Path hf = Shared.fixture("qwen3_moe/hf");
        for (String format : List.of("safetensors", "torch_dist")) {
            Path out = tmp.resolve(format);
            CliRun r = CliRun.of("import", "--in", hf.toString(), "--out", out.toString(), "--ckpt-format", format,
                    "--max-shard-size", "1MB", "--part", "1/2", "--no-progress");
            assertEquals(0, r.code(), r.err());
            Path staging = out.resolve(".moeport-staging");
            List<String> lines = Files.readAllLines(staging.resolve(".moeport-part-1-of-2.manifest"));
            assertTrue(lines.size() >= 2, format + ": " + lines);
            for (String line : lines) {
                String[] f = line.split("\t");
                byte[] bytes = Files.readAllBytes(staging.resolve(f[0]));
                assertEquals(bytes.length, Long.parseLong(f[1]), line);
                assertEquals(crc(bytes, 0, bytes.length), Long.parseUnsignedLong(f[2], 16), format + ": " + line);
            }
        }
    }
}
