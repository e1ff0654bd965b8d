package dev.moeport.quant;

import static org.junit.jupiter.api.Assertions.assertEquals;
import static org.junit.jupiter.api.Assertions.assertTrue;

import java.io.IOException;
import java.lang.reflect.Method;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.Arrays;
import java.util.Set;
import java.util.TreeSet;
import java.util.function.Predicate;
import java.util.stream.Collectors;
import java.util.stream.Stream;
import jdk.incubator.vector.Vector;
import org.junit.jupiter.api.Test;

/**
 * The launchers' compile commands ({@code src/dist/compile-commands}) inline every method of the Vector API kernel
 * that takes or returns a vector, keep every row pass (a method of a job and a row) out of its callers, and name
 * nothing else: a method added without its line would leave C2 its old choices; a line left behind by a rename would
 * do nothing. And both launchers give the file.
 */
class KernelCompileCommandsTest {
    private static final Path COMMANDS = Path.of("src/dist/compile-commands");

    @Test
    void vectorHelpersAreInlinedAndRowPassesNotAndNothingElseIsNamed() throws IOException {
        assertEquals(kernelMethods(m -> Stream.concat(Stream.of(m.getReturnType()), Arrays.stream(m.getParameterTypes()))
                .anyMatch(Vector.class::isAssignableFrom)), named("inline"));
        assertEquals(kernelMethods(m -> m.getParameterCount() == 2 && m.getParameterTypes()[0].getSimpleName().equals("Job")
                && m.getParameterTypes()[1] == long.class), named("dontinline"));
    }

    /** The names of the kernel's methods that {@code which} accepts. */
    private static Set<String> kernelMethods(Predicate<Method> which) {
        return Arrays.stream(PanamaQuantKernel.class.getDeclaredMethods()).filter(which).map(Method::getName)
                .collect(Collectors.toCollection(TreeSet::new));
    }

    /** The kernel methods the file names with {@code command}. */
    private static Set<String> named(String command) throws IOException {
        String prefix = command + " " + PanamaQuantKernel.class.getName().replace('.', '/') + ".";
        return Files.readAllLines(COMMANDS).stream().filter(line -> line.startsWith(command + " "))
                .map(line -> {
                    assertTrue(line.startsWith(prefix), "a compile command for another class: " + line);
                    return line.substring(prefix.length());
                })
                .collect(Collectors.toCollection(TreeSet::new));
    }

    @Test
    void bothLaunchersGiveTheFileToTheJvm() throws IOException {
        assertTrue(Files.readString(Path.of("bin/moeport")).contains("\"-XX:CompileCommandFile=$MOEPORT_COMPILE_COMMANDS\""));
        assertTrue(Files.readString(Path.of("bin/lib/jdk.sh")).contains("/src/dist/compile-commands\""));
        assertTrue(Files.readString(Path.of("src/dist/moeport")).contains("\"-XX:CompileCommandFile=$home/lib/compile-commands\""));
        assertTrue(Files.readString(Path.of("bin/dist")).contains("cp src/dist/compile-commands \"$stage/lib/compile-commands\""));
    }
}
