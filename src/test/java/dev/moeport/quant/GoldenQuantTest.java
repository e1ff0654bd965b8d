package dev.moeport.quant;

import static dev.moeport.quant.QuantTesting.assertSameBytes;

import dev.moeport.format.safetensors.SafetensorsCheckpoint;
import dev.moeport.tensor.DType;
import dev.moeport.tensor.TensorView;
import dev.moeport.testing.Shared;
import java.io.IOException;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.List;
import java.util.stream.Stream;
import org.junit.jupiter.api.Assertions;
import org.junit.jupiter.params.ParameterizedTest;
import org.junit.jupiter.params.provider.Arguments;
import org.junit.jupiter.params.provider.MethodSource;

/**
 * Every golden file of ModelOpt ({@code shared/golden/quant/<format>__<case>.safetensors}), through both
 * kernels: every output byte from {@code w} (and the calibrated {@code amax} where there is one), whole
 * and in row chunks, and {@code dequant} from the golden outputs. Where the Panama kernel cannot run,
 * its cases show as skipped.
 */
class GoldenQuantTest {

    static Stream<Arguments> cases() throws IOException {
        List<Path> files;
        try (Stream<Path> s = Files.list(Shared.golden("quant"))) {
            files = s.filter(p -> p.toString().endsWith(".safetensors")).sorted().toList();
        }
        Assertions.assertFalse(files.isEmpty(), "no golden files");
        List<Arguments> cases = new ArrayList<>();
        for (Path f : files) {
            for (String kernel : QuantTesting.KERNELS) {
                cases.add(Arguments.of(f.getFileName().toString(), kernel));
            }
        }
        return cases.stream();
    }

    @ParameterizedTest(name = "{0} {1}")
    @MethodSource("cases")
    void reproducesEveryByte(String fileName, String kernelName) {
        QuantKernel kernel = QuantTesting.kernel(kernelName);
        String formatName = fileName.substring(0, fileName.indexOf("__")).replace("_amax", "");
        QuantFormat format = QuantFormat.fromCliName(formatName);
        try (SafetensorsCheckpoint golden = SafetensorsCheckpoint.open(Shared.golden("quant").resolve(fileName));
             Arena arena = Arena.ofConfined()) {
            TensorView w = (TensorView) golden.tensor("w");
            Assertions.assertEquals(DType.BF16, w.dtype());
            long rows = w.shape().dim(0);
            long cols = w.shape().dim(1);

            float tensorScale = 0;
            if (format.usesTensorAmax()) {
                float amax = golden.contains("amax")
                        ? data(golden, "amax").get(ValueLayout.JAVA_FLOAT_UNALIGNED, 0)
                        : kernel.amax(w.data(), DType.BF16, w.numel());
                tensorScale = format.tensorScale(amax);
                MemorySegment actual = arena.allocate(4);
                actual.set(ValueLayout.JAVA_FLOAT_UNALIGNED, 0, tensorScale);
                assertSameBytes(format == QuantFormat.FP8 ? "weight_scale" : "weight_scale_2",
                        data(golden, format == QuantFormat.FP8 ? "weight_scale" : "weight_scale_2"), actual);
            }

            QuantTesting.Quantized whole = QuantTesting.quantizeInChunks(arena, kernel, format, w.data(), DType.BF16,
                    rows, cols, tensorScale, rows);
            assertSameBytes("weight", data(golden, "weight"), whole.weight());
            if (format != QuantFormat.FP8) {
                assertSameBytes("weight_scale", data(golden, "weight_scale"), whole.scale());
            }
            for (long chunk : new long[] {1, 5, 16}) {
                QuantTesting.Quantized parts = QuantTesting.quantizeInChunks(arena, kernel, format, w.data(), DType.BF16,
                        rows, cols, tensorScale, chunk);
                assertSameBytes("weight in chunks of " + chunk, whole.weight(), parts.weight());
                assertSameBytes("weight_scale in chunks of " + chunk, whole.scale(), parts.scale());
            }

            if (golden.contains("dequant")) {
                MemorySegment dst = arena.allocate(rows * cols * 2);
                kernel.dequantize(format, data(golden, "weight"), data(golden, "weight_scale"), tensorScale, rows, cols,
                        DType.BF16, dst);
                assertSameBytes("dequant", data(golden, "dequant"), dst);
            }
        }
    }

    private static MemorySegment data(SafetensorsCheckpoint ckpt, String name) {
        return ((TensorView) ckpt.tensor(name)).data();
    }
}
