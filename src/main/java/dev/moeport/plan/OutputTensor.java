package dev.moeport.plan;

import dev.moeport.tensor.DType;
import dev.moeport.tensor.Shape;

/** One tensor of the output checkpoint. */
public record OutputTensor(String name, DType dtype, Shape shape) {
    public long byteSize() {
        return dtype.byteSize(shape.numel());
    }
}
