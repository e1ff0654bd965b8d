package dev.moeport.quant;

import static org.junit.jupiter.api.Assertions.assertEquals;

import org.junit.jupiter.api.Test;

/** The shared scalar rules against the spec's own examples and an independent float log2. */
class QuantMathTest {

    @Test
    void e2m1CodesFollowTheSpec() {
        float[] x = {0, 0.25f, 0.26f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5, 5.01f, 100};
        int[] nvfp4 = {0, 0, 1, 2, 2, 4, 4, 6, 6, 7, 7};
        int[] mxfp4 = {0, 0, 1, 1, 2, 3, 4, 5, 6, 7, 7};
        for (int i = 0; i < x.length; i++) {
            assertEquals(nvfp4[i], QuantMath.nvfp4Code(x[i]), "nvfp4 " + x[i]);
            if (x[i] != 0) {
                assertEquals(nvfp4[i] | 8, QuantMath.nvfp4Code(-x[i]), "nvfp4 -" + x[i]);
            }
            assertEquals(mxfp4[i] | (x[i] == 0 ? 8 : 0), QuantMath.mxfp4Code(x[i]), "mxfp4 " + x[i]);
            assertEquals(mxfp4[i] | 8, QuantMath.mxfp4Code(-x[i]), "mxfp4 -" + x[i]);
        }
        assertEquals(0, QuantMath.nvfp4Code(-0.0f));
        assertEquals(8, QuantMath.nvfp4Code(-0.1f));
        assertEquals(8, QuantMath.mxfp4Code(-0.0f));
    }

    /** ceil of the float log2, the logarithm taken in double and rounded once to float. */
    @Test
    void ceilLog2RoundsTheLogarithmToFloatFirst() {
        for (int k = -149; k <= 127; k++) {
            float p = Math.scalb(1.0f, k);
            for (int f = 0; f < 64; f++) {
                float y = Float.intBitsToFloat(Float.floatToRawIntBits(p) + f);
                int expected = (int) Math.ceil((float) (Math.log(y) / Math.log(2)));
                assertEquals(expected, QuantMath.ceilLog2(y), "ceil(log2(" + y + "))");
            }
        }
        assertEquals(4, QuantMath.ceilLog2(Math.nextUp(16.0f)), "log2 of a float just above 16 rounds to 4");
        assertEquals(1, QuantMath.ceilLog2(Math.nextUp(1.0f)));
        assertEquals(-127, QuantMath.mxfp4Exponent(0));
        assertEquals(-127, QuantMath.mxfp8Exponent(Float.MIN_VALUE));
        assertEquals(0, QuantMath.mxfp4Exponent(6.0f));
        assertEquals(1, QuantMath.mxfp4Exponent(6.05f));
    }
}
