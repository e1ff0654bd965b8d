package dev.moeport.quant;

/**
 * Chooses the {@link QuantKernel} once, at start-up, as Apache Lucene's VectorizationProvider does: the
 * Vector API implementation when the JVM runs with {@code --add-modules jdk.incubator.vector}, else
 * the scalar reference with one warning (also when the CPU's vectors are too narrow for it).
 * {@code -Dmoeport.kernel=scalar|panama} forces a choice.
 */
public final class QuantKernels {
    private static final String PANAMA_CLASS = "dev.moeport.quant.PanamaQuantKernel";
    private static final QuantKernel DEFAULT = choose();

    private QuantKernels() {}

    /** The kernel every command uses. */
    public static QuantKernel get() {
        return DEFAULT;
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
     * @throws IllegalStateException when the module is not loaded
     */
    public static QuantKernel panama() {
        if (!vectorApiAvailable()) {
            throw new IllegalStateException("the Vector API is not available: run the JVM with --add-modules jdk.incubator.vector");
        }
        try {
            return (QuantKernel) Class.forName(PANAMA_CLASS).getDeclaredConstructor().newInstance();
        } catch (ReflectiveOperationException e) {
            throw new IllegalStateException("cannot load " + PANAMA_CLASS, e);
        }
    }

    private static QuantKernel choose() {
        String forced = System.getProperty("moeport.kernel", "");
        switch (forced) {
            case "scalar":
                return scalar();
            case "panama":
                return panama();
            case "":
                break;
            default:
                throw new IllegalArgumentException("-Dmoeport.kernel must be scalar or panama, not '" + forced + "'");
        }
        if (!vectorApiAvailable()) {
            System.err.println("moeport: warning: the Vector API is not available (run the JVM with --add-modules jdk.incubator.vector);"
                    + " using the scalar kernels, which are several times slower");
            return scalar();
        }
        try {
            return panama();
        } catch (IllegalStateException | LinkageError e) {
            Throwable why = e;
            while (why.getCause() != null) {
                why = why.getCause();
            }
            System.err.println("moeport: warning: " + why.getMessage() + "; using the scalar kernels, which are several times slower");
            return scalar();
        }
    }
}
