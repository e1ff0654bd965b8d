package dev.moeport.cli;

import dev.moeport.quant.QuantFormat;
import java.util.Arrays;
import java.util.Iterator;
import picocli.CommandLine.ITypeConverter;

/** {@code --format nvfp4} and friends. */
final class FormatConverter implements ITypeConverter<QuantFormat> {
    @Override
    public QuantFormat convert(String value) {
        try {
            return QuantFormat.fromCliName(value);
        } catch (IllegalArgumentException e) {
            throw new picocli.CommandLine.TypeConversionException(e.getMessage());
        }
    }

    /** The names, for help texts. */
    static final class Names implements Iterable<String> {
        @Override
        public Iterator<String> iterator() {
            return Arrays.stream(QuantFormat.values()).map(QuantFormat::cliName).iterator();
        }
    }
}
