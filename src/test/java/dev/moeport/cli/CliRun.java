package dev.moeport.cli;

import java.io.PrintWriter;
import java.io.StringWriter;

/** Output, error and exit code of one in-process run of the command line. */
public record CliRun(int code, String out, String err) {
    /**
     * Runs a command that must succeed and returns its {@code --out} folder. A quantized output ({@code quantize}, or
     * {@code export --format}) must also pass {@code moeport check}: every quantized checkpoint the tests write is checked.
     */
    public static java.nio.file.Path succeeding(String... args) {
        CliRun r = of(args);
        org.junit.jupiter.api.Assertions.assertEquals(0, r.code(), r.err());
        java.util.List<String> list = java.util.Arrays.asList(args);
        java.nio.file.Path out = java.nio.file.Path.of(args[list.indexOf("--out") + 1]);
        boolean quantized = (list.getFirst().equals("quantize") || list.getFirst().equals("export") && (list.contains("--format") || list.contains("--recipe")))
                && !list.contains("--dry-run");
        if (quantized) {
            CliRun check = of("check", out.toString(), "--engine", engineFor(list));
            // An uncalibrated Model Optimizer fp8 output has no input_scale, which vLLM needs: that may be its only problem.
            boolean onlyUncalibratedFp8 = check.code() == 1 && check.out().lines().filter(l -> !l.startsWith(out + ": "))
                    .allMatch(l -> l.endsWith(dev.moeport.check.PreflightCheck.FP8_LINEAR_WITHOUT_INPUT_SCALE)
                            || l.endsWith(dev.moeport.check.PreflightCheck.FP8_EXPERT_WITHOUT_INPUT_SCALE));
            if (!(onlyUncalibratedFp8 && uncalibratedFp8Expected(list))) {
                org.junit.jupiter.api.Assertions.assertEquals(0, check.code(), "moeport check " + out + ":\n" + check.out() + check.err());
            }
        }
        return out;
    }

    /**
     * The engine a quantized output is checked for: vLLM, except where its Model Optimizer loader refuses the
     * quant_algo (W8A16, W4A16_AWQ: TensorRT-LLM's reads them; Model Optimizer's lower-case mxfp4, which neither vLLM's
     * nor TensorRT-LLM's list holds: SGLang, whose list check does not encode).
     */
    private static String engineFor(java.util.List<String> args) {
        int at = args.indexOf("--format");
        String format = at < 0 ? "" : args.get(at + 1);
        boolean modelopt = !args.contains("--flavor") || args.get(args.indexOf("--flavor") + 1).equals("modelopt");
        return !modelopt ? "vllm" : switch (format) {
            case "int8_wo", "int4_g128" -> "trtllm";
            case "mxfp4" -> "sglang";
            default -> "vllm";
        };
    }

    /** Whether a run may write fp8 without input scales under Model Optimizer's names: fp8 (or a recipe) in the modelopt flavor. */
    private static boolean uncalibratedFp8Expected(java.util.List<String> args) {
        int at = args.indexOf("--format");
        boolean modelopt = !args.contains("--flavor") || args.get(args.indexOf("--flavor") + 1).equals("modelopt");
        return modelopt && (at < 0 || args.get(at + 1).equals("fp8"));
    }

    public static CliRun of(String... args) {
        StringWriter out = new StringWriter();
        StringWriter err = new StringWriter();
        int code = Main.run(new PrintWriter(out, true), new PrintWriter(err, true), args);
        return new CliRun(code, out.toString(), err.toString());
    }
}
