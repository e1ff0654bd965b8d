package dev.moeport.plan;

import static org.junit.jupiter.api.Assertions.assertArrayEquals;
import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertThrows;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.util.List;
import java.util.Map;
import org.junit.jupiter.api.Test;

class PartTest {
    private static Part choose(String part, Integer parts, Map<String, String> env) {
        return Part.choose(part, parts, env);
    }

    private static String refusal(String part, Integer parts, Map<String, String> env) {
        return assertThrows(IllegalArgumentException.class, () -> Part.choose(part, parts, env)).getMessage();
    }

    @Test
    void partIsOneBasedAndCheckedAgainstItsCount() {
        assertEquals(new Part(2, 8, null), choose("2/8", null, Map.of()));
        assertEquals("--part 4/3: there are only 3 parts (1/3 to 3/3)", refusal("4/3", null, Map.of()));
        assertEquals("--part 0/3: parts count from 1 (the first of 3 is 1/3)", refusal("0/3", null, Map.of()));
        assertEquals("--part 1/0: the number of parts must be at least 1", refusal("1/0", null, Map.of()));
        assertEquals("--part takes I/N, part I of N counted from 1 (e.g. --part 2/8), not '3'", refusal("3", null, Map.of()));
        assertEquals("--part 2/3 and --parts 4 disagree on the number of parts", refusal("2/3", 4, Map.of()));
        // --part wins over a scheduler's variables
        assertEquals(new Part(1, 2, null), choose("1/2", null, Map.of("SLURM_ARRAY_TASK_ID", "5", "SLURM_ARRAY_TASK_COUNT", "9")));
        assertEquals(Part.WHOLE, choose(null, null, Map.of()));
    }

    @Test
    void aSlurmJobArrayChoosesThePartFromItsIdsWhateverTheyStartFrom() {
        // sbatch --array=0-2: ids 0, 1, 2
        assertEquals(new Part(1, 3, "SLURM_ARRAY_TASK_ID=0"), choose(null, null,
                Map.of("SLURM_ARRAY_TASK_ID", "0", "SLURM_ARRAY_TASK_MIN", "0", "SLURM_ARRAY_TASK_MAX", "2")));
        // --array=1-3
        assertEquals(new Part(3, 3, "SLURM_ARRAY_TASK_ID=3"), choose(null, null,
                Map.of("SLURM_ARRAY_TASK_ID", "3", "SLURM_ARRAY_TASK_MIN", "1", "SLURM_ARRAY_TASK_MAX", "3", "SLURM_ARRAY_TASK_COUNT", "3")));
        // --array=10-20:5: ids 10, 15, 20
        assertEquals(new Part(2, 3, "SLURM_ARRAY_TASK_ID=15"), choose(null, null, Map.of("SLURM_ARRAY_TASK_ID", "15", "SLURM_ARRAY_TASK_MIN", "10",
                "SLURM_ARRAY_TASK_MAX", "20", "SLURM_ARRAY_TASK_STEP", "5")));
        // the count alone: ids from 0
        assertEquals(new Part(4, 4, "SLURM_ARRAY_TASK_ID=3"), choose(null, null, Map.of("SLURM_ARRAY_TASK_ID", "3", "SLURM_ARRAY_TASK_COUNT", "4")));
        assertTrue(refusal(null, null, Map.of("SLURM_ARRAY_TASK_ID", "4", "SLURM_ARRAY_TASK_COUNT", "4")).startsWith("SLURM_ARRAY_TASK_ID 4 lies outside"));
        assertEquals("--parts 3 but the Slurm job array has 4 tasks", refusal(null, 3, Map.of("SLURM_ARRAY_TASK_ID", "0", "SLURM_ARRAY_TASK_COUNT", "4")));
        assertTrue(refusal(null, null, Map.of("SLURM_ARRAY_TASK_ID", "2")).contains("give --part I/N"));
    }

    @Test
    void aKubernetesIndexedJobNeedsItsCompletions() {
        assertEquals(new Part(1, 5, "JOB_COMPLETION_INDEX=0"), choose(null, 5, Map.of("JOB_COMPLETION_INDEX", "0")));
        assertEquals(new Part(5, 5, "JOB_COMPLETION_INDEX=4"), choose(null, 5, Map.of("JOB_COMPLETION_INDEX", "4")));
        assertTrue(refusal(null, null, Map.of("JOB_COMPLETION_INDEX", "0")).contains("give --parts N"));
        assertEquals("JOB_COMPLETION_INDEX 5 is not below --parts 5", refusal(null, 5, Map.of("JOB_COMPLETION_INDEX", "5")));
        assertTrue(refusal(null, 3, Map.of()).startsWith("--parts 3 needs --part I/3"));
    }

    @Test
    void filesGoToPartsBalancedByBytes() {
        // Largest first, each to the lightest part: 9 -> 1, 7 -> 2, 5 -> 3, 4 -> 3 (5), 3 -> 2 (7)... computed by hand.
        assertArrayEquals(new int[] {1, 2, 3, 3, 2, 1}, Part.assign(List.of(9L, 7L, 5L, 4L, 3L, 1L), 3));
        // More parts than files: the extra parts get none.
        assertArrayEquals(new int[] {1, 2}, Part.assign(List.of(5L, 5L), 4));
    }
}
