package dev.moeport.cli;

import dev.moeport.tensor.DType;
import picocli.CommandLine.ITypeConverter;

/** {@code --dtype bf16|f16|f32}. */
final class DtypeConverter implements ITypeConverter<DType> {
    @Override
    public DType convert(String value) {
        DType t = DType.fromName(value.toUpperCase(java.util.Locale.ROOT));
        if (t != DType.BF16 && t != DType.F16 && t != DType.F32) {
            throw new picocli.CommandLine.TypeConversionException("'" + value + "' is not bf16, f16 or f32");
        }
        return t;
    }
}
