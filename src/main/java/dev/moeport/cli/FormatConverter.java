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

    /** {@code --flavor NAME} for output in {@code format} (null: none), refused as a usage error where it cannot describe it. */
    static dev.moeport.convert.Flavor flavor(picocli.CommandLine.Model.CommandSpec spec, String name, QuantFormat format) {
        try {
            dev.moeport.convert.Flavor flavor = dev.moeport.convert.Flavor.of(name);
            if (format == null && flavor != dev.moeport.convert.Flavor.MODELOPT) {
                throw new IllegalArgumentException("--flavor describes a quantized output; give --format");
            }
            if (format != null) {
                flavor.requireSupports(format);
            }
            return flavor;
        } catch (IllegalArgumentException | dev.moeport.MoeportException e) {
            throw new picocli.CommandLine.ParameterException(spec.commandLine(), e.getMessage());
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
