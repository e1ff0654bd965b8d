package dev.moeport;

/**
 * A failure of the input or of the run that the user can act on. The message is one line that names
 * the file and, where there is one, the tensor; the CLI prints it without a stack trace and exits 1.
 */
public class MoeportException extends RuntimeException {
    public MoeportException(String message) {
        super(message);
    }

    public MoeportException(String message, Throwable cause) {
        super(message, cause);
    }
}
