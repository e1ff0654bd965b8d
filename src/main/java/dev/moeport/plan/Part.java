package dev.moeport.plan;

import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Map;
import java.util.PriorityQueue;

/**
 * Which part of a plan split over {@code count} processes this run writes ({@code index} counts from 1),
 * and where that choice came from ({@code --part}, a Slurm job array, a Kubernetes Indexed Job). Every part
 * computes the same plan; each output file belongs to exactly one part ({@link #assign}).
 */
public record Part(int index, int count, String source) {
    /** The whole plan in one process. */
    public static final Part WHOLE = new Part(1, 1, null);

    public boolean isWhole() {
        return count == 1;
    }

    @Override
    public String toString() {
        return index + "/" + count;
    }

    /**
     * The part from {@code --part I/N}, else from a scheduler's variables, else the whole plan.
     *
     * @param part {@code --part}'s value, or null
     * @param parts {@code --parts}' value, or null
     * @throws IllegalArgumentException with a one-line reason for a bad value
     */
    public static Part choose(String part, Integer parts, Map<String, String> env) {
        if (parts != null && parts < 1) {
            throw new IllegalArgumentException("--parts must be at least 1, not " + parts);
        }
        if (part != null) {
            Part p = parse(part);
            if (parts != null && parts != p.count) {
                throw new IllegalArgumentException("--part " + part + " and --parts " + parts + " disagree on the number of parts");
            }
            return p;
        }
        String task = env.get("SLURM_ARRAY_TASK_ID");
        if (task != null) {
            return fromSlurm(task, env, parts);
        }
        String completion = env.get("JOB_COMPLETION_INDEX");
        if (completion != null) {
            if (parts == null) {
                throw new IllegalArgumentException("JOB_COMPLETION_INDEX is set (a Kubernetes Indexed Job): give --parts N, the Job's completions");
            }
            int index = number("JOB_COMPLETION_INDEX", completion) + 1;
            return checked(index, parts, "JOB_COMPLETION_INDEX=" + completion, "JOB_COMPLETION_INDEX " + completion + " is not below --parts " + parts);
        }
        if (parts != null && parts > 1) {
            throw new IllegalArgumentException("--parts " + parts + " needs --part I/" + parts + " or a scheduler's index"
                    + " (SLURM_ARRAY_TASK_ID, JOB_COMPLETION_INDEX)");
        }
        return WHOLE;
    }

    /** {@code I/N}, 1-based. */
    static Part parse(String text) {
        String[] halves = text.split("/", -1);
        if (halves.length != 2) {
            throw new IllegalArgumentException("--part takes I/N, part I of N counted from 1 (e.g. --part 2/8), not '" + text + "'");
        }
        int index = number("--part " + text + ":", halves[0]);
        int count = number("--part " + text + ":", halves[1]);
        if (count < 1) {
            throw new IllegalArgumentException("--part " + text + ": the number of parts must be at least 1");
        }
        if (index < 1) {
            throw new IllegalArgumentException("--part " + text + ": parts count from 1 (the first of " + count + " is 1/" + count + ")");
        }
        return checked(index, count, null, "--part " + text + ": there are only " + count + " parts (1/" + count + " to " + count + "/" + count + ")");
    }

    /**
     * A Slurm job array task: with {@code _MIN} (and {@code _STEP}) the task's place in the array, the count
     * from {@code _COUNT} or {@code _MIN}/{@code _MAX}; with {@code _COUNT} alone, ids 0 to count - 1.
     */
    private static Part fromSlurm(String task, Map<String, String> env, Integer parts) {
        int id = number("SLURM_ARRAY_TASK_ID", task);
        String min = env.get("SLURM_ARRAY_TASK_MIN");
        String max = env.get("SLURM_ARRAY_TASK_MAX");
        String countText = env.get("SLURM_ARRAY_TASK_COUNT");
        String stepText = env.get("SLURM_ARRAY_TASK_STEP");
        int step = stepText == null ? 1 : Math.max(1, number("SLURM_ARRAY_TASK_STEP", stepText));
        int first = min == null ? 0 : number("SLURM_ARRAY_TASK_MIN", min);
        Integer count = countText != null ? Integer.valueOf(number("SLURM_ARRAY_TASK_COUNT", countText))
                : max != null && min != null ? (number("SLURM_ARRAY_TASK_MAX", max) - first) / step + 1 : null;
        if (count == null) {
            throw new IllegalArgumentException("SLURM_ARRAY_TASK_ID is set but neither SLURM_ARRAY_TASK_COUNT nor SLURM_ARRAY_TASK_MIN/_MAX:"
                    + " give --part I/N");
        }
        if (parts != null && parts.intValue() != count) {
            throw new IllegalArgumentException("--parts " + parts + " but the Slurm job array has " + count + " tasks");
        }
        if ((id - first) % step != 0) {
            throw new IllegalArgumentException("SLURM_ARRAY_TASK_ID " + id + " is not on the array's step " + step + " from " + first);
        }
        int index = (id - first) / step + 1;
        return checked(index, count, "SLURM_ARRAY_TASK_ID=" + task, "SLURM_ARRAY_TASK_ID " + id + " lies outside the array of " + count
                + " tasks from " + first + " (moeport needs the ids of one array, e.g. --array=0-" + (count - 1) + ")");
    }

    private static Part checked(int index, int count, String source, String outside) {
        if (index < 1 || index > count) {
            throw new IllegalArgumentException(outside);
        }
        return new Part(index, count, source);
    }

    private static int number(String what, String text) {
        try {
            return Integer.parseInt(text.strip());
        } catch (NumberFormatException e) {
            throw new IllegalArgumentException(what + " '" + text + "' is not a whole number");
        }
    }

    /**
     * Which part (1-based) writes each file, balanced by bytes: the largest file first, each to the part
     * with the fewest bytes so far (the lowest-numbered on a tie). Every part computes the same answer.
     */
    public static int[] assign(List<Long> fileBytes, int count) {
        List<Integer> order = new ArrayList<>();
        for (int i = 0; i < fileBytes.size(); i++) {
            order.add(i);
        }
        order.sort(Comparator.comparing((Integer i) -> fileBytes.get(i)).reversed().thenComparing(i -> i));
        // {bytes so far, part}
        PriorityQueue<long[]> load = new PriorityQueue<>(Comparator.<long[]>comparingLong(a -> a[0]).thenComparingLong(a -> a[1]));
        for (int p = 1; p <= count; p++) {
            load.add(new long[] {0, p});
        }
        int[] owner = new int[fileBytes.size()];
        for (int file : order) {
            long[] least = load.poll();
            owner[file] = (int) least[1];
            least[0] += fileBytes.get(file);
            load.add(least);
        }
        return owner;
    }
}
