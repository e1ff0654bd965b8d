package dev.moeport.io;

import java.io.IOException;
import java.nio.file.AccessDeniedException;
import java.nio.file.DirectoryNotEmptyException;
import java.nio.file.FileAlreadyExistsException;
import java.nio.file.FileSystemException;
import java.nio.file.NoSuchFileException;
import java.nio.file.NotDirectoryException;

/** Why an I/O operation failed, in words: Java's file-system exceptions often carry only the path. */
public final class IoErrors {
    private IoErrors() {}

    public static String why(IOException e) {
        String reason = switch (e) {
            case AccessDeniedException a -> "permission denied";
            case NoSuchFileException n -> "no such file or folder";
            case FileAlreadyExistsException f -> "already exists";
            case DirectoryNotEmptyException d -> "folder not empty";
            case NotDirectoryException n -> "not a folder";
            case FileSystemException f when f.getReason() != null -> f.getReason();
            default -> e.getMessage();
        };
        return reason == null ? e.getClass().getSimpleName() : reason.contains("No space left") ? "disk full" : reason;
    }
}
