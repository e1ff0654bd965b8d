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

    /**
     * {@code --flavor NAME} for output in {@code format} (null: none, or a recipe's formats when {@code recipe}), refused
     * as a usage error where it cannot describe it.
     */
    static dev.moeport.convert.Flavor flavor(picocli.CommandLine.Model.CommandSpec spec, String name, QuantFormat format, boolean recipe) {
        try {
            dev.moeport.convert.Flavor flavor = dev.moeport.convert.Flavor.of(name);
            if (format == null && !recipe && flavor != dev.moeport.convert.Flavor.MODELOPT) {
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

    /**
     * {@code --recipe FILE} (null: none), read and checked against {@code --format} (one or the other) and the flavor,
     * refused as a usage error in one line naming the file.
     */
    static dev.moeport.convert.Recipe recipe(picocli.CommandLine.Model.CommandSpec spec, java.nio.file.Path file, QuantFormat format,
                                             dev.moeport.convert.Flavor flavor) {
        if (file == null) {
            return null;
        }
        try {
            if (format != null) {
                throw new IllegalArgumentException("--recipe gives each module its format; give it or --format, not both");
            }
            dev.moeport.convert.Recipe recipe = dev.moeport.convert.Recipe.read(file);
            flavor.requireSupports(recipe.formats());
            return recipe;
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
