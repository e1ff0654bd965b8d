package dev.moeport.testing;

import static org.junit.jupiter.api.Assertions.assertTrue;

import java.nio.file.Files;
import java.nio.file.Path;

/** The ../shared folder beside the checkout: fixtures written by transformers, golden files of ModelOpt. */
public final class Shared {
    private Shared() {}

    public static Path root() {
        Path root = Path.of(System.getProperty("moeport.shared", "../shared")).toAbsolutePath().normalize();
        assertTrue(Files.isDirectory(root), "the tests need ../shared beside the checkout, not found at " + root);
        return root;
    }

    public static Path fixture(String relative) {
        return root().resolve("fixtures").resolve(relative);
    }

    public static Path golden(String relative) {
        return root().resolve("golden").resolve(relative);
    }
}
