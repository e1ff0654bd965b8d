package dev.moeport.quant;

import dev.moeport.MoeportException;
import dev.moeport.Warnings;

/**
 * Chooses the {@link QuantKernel} once, on first use, as Apache Lucene's VectorizationProvider does: the
 * Vector API implementation when the JVM runs with {@code --add-modules jdk.incubator.vector} and the
 * CPU has vectors of 256 bits or more, else the scalar reference with one warning.
 * {@code -Dmoeport.kernel=scalar|panama} forces a choice. The JVM's {@code -XX:MaxVectorSize=32} caps
 * the width (the tests run the kernels a second time so, to test the 256-bit path AVX2 machines run). A run too small
 * to pay for the Vector API's start takes the scalar kernel unless forced ({@link #forRun}).
 *
 * <p>This class never touches a vector class itself (the Panama kernel is loaded by name), so a bad
 * setting is one clear error, not an {@code ExceptionInInitializerError}.
 */
public final class QuantKernels {
    private static final String PANAMA_CLASS = "dev.moeport.quant.PanamaQuantKernel";
    private static final String PROPERTY = "moeport.kernel";

    /** The kernel chosen, and the line that says what runs and, for the scalar one, why. */
    private record Choice(QuantKernel kernel, String description) {}

    private static volatile Choice chosen;

    private QuantKernels() {}

    /**
     * The kernel every command uses.
     *
     * @throws MoeportException when {@code -Dmoeport.kernel} names no kernel, or forces one that cannot run here
     */
    public static QuantKernel get() {
        return choice().kernel();
    }

    /**
     * What runs, in one line, for {@code moeport --version} and logs: the Vector API kernel and its
     * vector width, or the scalar one and why.
     */
    public static String describe() {
        return choice().description();
    }

    private static Choice choice() {
        Choice c = chosen;
        if (c == null) {
            synchronized (QuantKernels.class) {
                c = chosen;
                if (c == null) {
                    c = choose();
                    chosen = c;
                }
            }
        }
        return c;
    }

    /**
     * Kernel input from which a run takes the Vector API kernel the JVM chose by itself: below it, the scalar one. Its
     * code runs slowly until the JIT has compiled it, which takes a second or so: on the 2-core build machine, the demo's
     * NVFP4 export (145 MB through the kernels) took 2.0-2.2 s with it and 1.25-1.30 with the scalar kernel, one of 600
     * MB as long with either (2.4 s), one of 1.15 GB (which warms the kernels up ahead) 2.0 s against 3.9.
     */
    public static final long VECTORS_FROM = 512L << 20;

    /** A run's kernel, and the line that says what runs. */
    public record ForRun(QuantKernel kernel, String description) {}

    /**
     * The kernel for a run whose kernels read {@code kernelBytes} ({@link dev.moeport.plan.Plan#kernelBytes}): {@code
     * chosen}, or the scalar one where {@code chosen} is the Vector API kernel the JVM chose by itself (no {@code
     * -Dmoeport.kernel}) and the run reads less than {@link #VECTORS_FROM}. Both give the same bytes.
     */
    public static ForRun forRun(QuantKernel chosen, long kernelBytes) {
        if (kernelBytes >= VECTORS_FROM || chosen instanceof ScalarQuantKernel || !System.getProperty(PROPERTY, "").isEmpty()) {
            return new ForRun(chosen, chosen.description());
        }
        return new ForRun(scalar(), "scalar (" + (kernelBytes >> 20) + " MB through the kernels: below " + (VECTORS_FROM >> 20)
                + " MB the Vector API's start costs more than it saves; -D" + PROPERTY + "=panama forces it)");
    }

    /** The plain scalar reference implementation. */
    public static QuantKernel scalar() {
        return new ScalarQuantKernel();
    }

    /** Whether the Vector API module is loaded in this JVM. */
    public static boolean vectorApiAvailable() {
        return ModuleLayer.boot().findModule("jdk.incubator.vector").isPresent();
    }

    /**
     * The Vector API implementation. Loaded by name, so that this class never links against the
     * incubator module when it is absent.
     *
     * @throws IllegalStateException when the module is not loaded or the CPU's vectors are narrower than 256 bits
     */
    public static QuantKernel panama() {
        if (!vectorApiAvailable()) {
            throw new IllegalStateException("the Vector API is not available (run the JVM with --add-modules jdk.incubator.vector)");
        }
        try {
            return (QuantKernel) Class.forName(PANAMA_CLASS).getDeclaredConstructor().newInstance();
        } catch (ReflectiveOperationException | LinkageError e) {
            Throwable why = e;
            while (why.getCause() != null) {
                why = why.getCause();
            }
            throw new IllegalStateException(why.getMessage() == null ? "cannot load " + PANAMA_CLASS : why.getMessage(), e);
        }
    }

    private static Choice choose() {
        String forced = System.getProperty(PROPERTY, "");
        switch (forced) {
            case "scalar":
                return new Choice(scalar(), "scalar (-D" + PROPERTY + "=scalar)");
            case "panama":
                try {
                    QuantKernel k = panama();
                    return new Choice(k, k.description());
                } catch (IllegalStateException e) {
                    throw new MoeportException("-D" + PROPERTY + "=panama cannot run here: " + e.getMessage());
                }
            case "":
                break;
            default:
                throw new MoeportException("-D" + PROPERTY + " must be scalar or panama, not '" + forced + "'");
        }
        try {
            QuantKernel k = panama();
            return new Choice(k, k.description());
        } catch (IllegalStateException e) {
            Warnings.warn(e.getMessage() + "; using the scalar kernels, which are several times slower");
            return new Choice(scalar(), "scalar (" + e.getMessage() + ")");
        }
    }
}
