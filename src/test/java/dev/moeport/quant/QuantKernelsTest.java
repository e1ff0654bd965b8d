package dev.moeport.quant;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertNull;
import static org.junit.jupiter.api.Assertions.assertTrue;

import jdk.incubator.vector.FloatVector;
import org.junit.jupiter.api.Test;

/**
 * Which kernel runs, at which width. The build runs the kernel tests three times: at the machine's
 * widest vectors, and with {@code -XX:MaxVectorSize=32} and {@code =16} (the 256-bit vectors of AVX2
 * and the 128-bit ones of NEON), naming the cap in {@code moeport.test.maxVectorBits}.
 */
class QuantKernelsTest {
    /** The cap the build set with -XX:MaxVectorSize, in bits; 0 when none. */
    private static final int CAP = Integer.getInteger("moeport.test.maxVectorBits", 0);

    @Test
    void thePanamaKernelUsesTheWidestVectorsTheJvmOffers() {
        int offered = FloatVector.SPECIES_PREFERRED.vectorBitSize();
        // In the build log, so that each run of the kernel tests shows the width it tested.
        System.out.println("moeport kernel under test: " + QuantKernels.describe());
        if (CAP > 0) {
            assertTrue(offered <= CAP, "-XX:MaxVectorSize caps the vectors at " + CAP + " bits, yet the JVM offers " + offered);
        }
        if (offered < 256) {
            assertNull(QuantTesting.PANAMA, "the Panama kernel needs 256-bit vectors");
            return;
        }
        assertEquals(Math.min(512, offered), PanamaQuantKernel.vectorBits());
        assertTrue(QuantKernels.describe().contains(PanamaQuantKernel.vectorBits() + "-bit vectors"), QuantKernels.describe());
    }

    @Test
    void withoutWideEnoughVectorsTheScalarKernelRunsAndSaysWhy() {
        if (QuantTesting.PANAMA != null) {
            assertEquals("panama", QuantKernels.get().name());
            return;
        }
        assertEquals("scalar", QuantKernels.get().name());
        assertTrue(QuantKernels.describe().startsWith("scalar (the vector kernels need 256-bit vectors"), QuantKernels.describe());
    }

}
