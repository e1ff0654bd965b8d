package dev.moeport.exec;

import static org.junit.jupiter.api.Assertions.assertNotSame;
import static org.junit.jupiter.api.Assertions.assertSame;
import static org.junit.jupiter.api.Assertions.assertTimeoutPreemptively;

import dev.moeport.quant.QuantFormat;
import dev.moeport.quant.QuantKernels;
import dev.moeport.tensor.DType;
import java.time.Duration;
import org.junit.jupiter.api.Test;

/**
 * The warm-up before large quantizing runs works for every format and source dtype, and ends by its deadline; started
 * ahead by a command and again by its run, it runs once.
 */
class KernelWarmUpTest {
    @Test
    void everyFormatAndSourceDtypeWarmsUpWithinItsLimit() {
        for (QuantFormat format : QuantFormat.values()) {
            for (DType dtype : new DType[] {DType.BF16, DType.F16, DType.F32}) {
                // a limit of 50 ms: the time it takes is the kernels' on a small matrix, checked here not to throw
                assertTimeoutPreemptively(Duration.ofSeconds(20), () -> KernelWarmUp.run(QuantKernels.get(), format, dtype, 50_000_000L),
                        format + " from " + dtype);
            }
        }
    }

    @Test
    void aWarmUpStartedAheadIsTheOneTheRunWaitsFor() throws InterruptedException {
        Thread ahead = KernelWarmUp.inBackground(QuantKernels.get(), QuantFormat.MXFP8, DType.F16);
        assertSame(ahead, KernelWarmUp.inBackground(QuantKernels.get(), QuantFormat.MXFP8, DType.F16));
        Thread other = KernelWarmUp.inBackground(QuantKernels.get(), QuantFormat.MXFP8, DType.BF16);
        assertNotSame(ahead, other);
        ahead.join();
        other.join();
    }
}
