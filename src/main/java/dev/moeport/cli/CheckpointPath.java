package dev.moeport.cli;

import dev.moeport.MoeportException;
import dev.moeport.format.HubCache;
import java.nio.file.Path;
import picocli.CommandLine.ITypeConverter;
import picocli.CommandLine.TypeConversionException;

/** Reads a checkpoint argument: a path, a hub cache folder {@code models--ORG--NAME}, or a cached {@code ORG/NAME}. */
final class CheckpointPath implements ITypeConverter<Path> {
    @Override
    public Path convert(String value) {
        try {
            return HubCache.resolve(value, System.getenv());
        } catch (MoeportException e) {
            throw new TypeConversionException(e.getMessage());
        }
    }
}
