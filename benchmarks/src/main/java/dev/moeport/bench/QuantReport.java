package dev.moeport.bench;

import java.util.ArrayList;
import java.util.Collection;
import java.util.HashMap;
import java.util.List;
import java.util.Locale;
import java.util.Map;
import org.openjdk.jmh.results.RunResult;
import org.openjdk.jmh.runner.Runner;
import org.openjdk.jmh.runner.RunnerException;
import org.openjdk.jmh.runner.options.ChainedOptionsBuilder;
import org.openjdk.jmh.runner.options.OptionsBuilder;
import org.openjdk.jmh.runner.options.TimeValue;

/**
 * Runs {@link QuantBenchmark} on one thread and prints one line per kernel: GB/s of input
 * (1 GB = 1e9 bytes; dequantization counted by the BF16 tensor it writes) and the ratio to the copy.
 * {@code --quick}: short iterations, for a smoke run; {@code --f16}: an F16 weight instead (the kernels widen F16 to F32
 * first).
 */
public final class QuantReport {
    private QuantReport() {}

    public static void main(String[] args) throws RunnerException {
        boolean quick = List.of(args).contains("--quick");
        String dtype = List.of(args).contains("--f16") ? "f16" : "bf16";
        ChainedOptionsBuilder options = new OptionsBuilder()
                .include(QuantBenchmark.class.getName())
                .threads(1)
                .forks(1)
                .jvmArgsAppend("--add-modules", "jdk.incubator.vector", "--enable-native-access=ALL-UNNAMED", "-XX:-UseProfiledLoopPredicate", "-Xmx2g")
                // No forced GC between iterations: the kernels allocate next to nothing, and with it the
                // results were bimodal (Panama fp8 3.0 or 5.3 to 7.3 ms from run to run); the slow runs
                // had compiled against a segment-class profile that included heap segments (see
                // PanamaQuantKernel on why that costs).
                .shouldDoGC(false)
                .param("dtype", dtype);
        if (quick) {
            options.warmupIterations(2).warmupTime(TimeValue.milliseconds(300))
                    .measurementIterations(3).measurementTime(TimeValue.milliseconds(300));
        } else {
            options.warmupIterations(4).warmupTime(TimeValue.seconds(1))
                    .measurementIterations(6).measurementTime(TimeValue.seconds(1));
        }
        Collection<RunResult> results = new Runner(options.build()).run();

        double copyMs = Double.NaN;
        Map<String, Double> ms = new HashMap<>();
        Map<String, Double> error = new HashMap<>();
        List<String> order = new ArrayList<>();
        for (RunResult r : results) {
            var p = r.getParams();
            double score = r.getPrimaryResult().getScore();
            if (p.getBenchmark().endsWith(".copy")) {
                copyMs = score;
                continue;
            }
            String key = p.getParam("op") + " " + p.getParam("impl");
            ms.put(key, score);
            error.put(key, r.getPrimaryResult().getScoreError());
            if (!order.contains(p.getParam("op"))) {
                order.add(p.getParam("op"));
            }
        }
        System.out.println();
        String name = dtype.toUpperCase(Locale.ROOT);
        System.out.printf(Locale.ROOT, "# 4096 x 4096 %s weight (%d MB), one thread; GB/s of %s input, ratio to a plain copy%n",
                name, QuantBenchmark.INPUT_BYTES / 1_000_000, name);
        System.out.printf(Locale.ROOT, "%-16s %-7s %9s %8s %10s %9s%n", "kernel", "impl", "GB/s", "vs-copy", "vs-scalar", "ms/op");
        System.out.printf(Locale.ROOT, "%-16s %-7s %9.2f %8.2f %10s %9.3f%n", "copy", "-", gbps(copyMs), 1.0, "", copyMs);
        for (String op : order) {
            for (String impl : new String[] {"scalar", "panama"}) {
                Double t = ms.get(op + " " + impl);
                if (t == null) {
                    continue;
                }
                Double scalar = ms.get(op + " scalar");
                String speedup = impl.equals("panama") && scalar != null ? String.format(Locale.ROOT, "%.1fx", scalar / t) : "";
                System.out.printf(Locale.ROOT, "%-16s %-7s %9.2f %8.2f %10s %9.3f +- %.3f%n", op, impl, gbps(t), copyMs / t,
                        speedup, t, error.get(op + " " + impl));
            }
        }
    }

    private static double gbps(double msPerOp) {
        return QuantBenchmark.INPUT_BYTES / (msPerOp * 1e-3) / 1e9;
    }
}
