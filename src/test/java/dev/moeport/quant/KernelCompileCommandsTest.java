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
import java.util.stream.Collectors;
import java.util.stream.Stream;
import jdk.incubator.vector.Vector;
import org.junit.jupiter.api.Test;

/**
 * The launchers' compile commands ({@code src/dist/compile-commands}) inline every method of the Vector API kernel
 * that takes or returns a vector, and nothing else: a helper added without its line would box its vectors whenever C2
 * leaves it out of line; a line left behind by a rename would inline nothing. And both launchers give the file.
 */
class KernelCompileCommandsTest {
    private static final Path COMMANDS = Path.of("src/dist/compile-commands");

    @Test
    void everyKernelMethodThatTakesOrReturnsAVectorIsInlinedAndOnlyThose() throws IOException {
        String prefix = "inline " + PanamaQuantKernel.class.getName().replace('.', '/') + ".";
        Set<String> inlined = Files.readAllLines(COMMANDS).stream().filter(line -> line.startsWith("inline "))
                .map(line -> {
                    assertTrue(line.startsWith(prefix), "a compile command for another class: " + line);
                    return line.substring(prefix.length());
                })
                .collect(Collectors.toCollection(TreeSet::new));
        Set<String> takingVectors = Arrays.stream(PanamaQuantKernel.class.getDeclaredMethods())
                .filter(m -> Stream.concat(Stream.of(m.getReturnType()), Arrays.stream(m.getParameterTypes()))
                        .anyMatch(Vector.class::isAssignableFrom))
                .map(Method::getName)
                .collect(Collectors.toCollection(TreeSet::new));
        assertEquals(takingVectors, inlined);
    }

    @Test
    void bothLaunchersGiveTheFileToTheJvm() throws IOException {
        assertTrue(Files.readString(Path.of("bin/moeport")).contains("\"-XX:CompileCommandFile=$MOEPORT_COMPILE_COMMANDS\""));
        assertTrue(Files.readString(Path.of("bin/lib/jdk.sh")).contains("/src/dist/compile-commands\""));
        assertTrue(Files.readString(Path.of("src/dist/moeport")).contains("\"-XX:CompileCommandFile=$home/lib/compile-commands\""));
        assertTrue(Files.readString(Path.of("bin/dist")).contains("cp src/dist/compile-commands \"$stage/lib/compile-commands\""));
    }
}
