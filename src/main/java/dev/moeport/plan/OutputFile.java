package dev.moeport.plan;

import java.nio.file.Path;

/** A file of the output besides the tensors: one of the input model's own (tokenizer, code), or a JSON config moeport writes. */
public sealed interface OutputFile {
    /** Its name in the output folder. */
    String name();

    /** Its size in the output. */
    long byteSize();

    /** Bytes read from the input to make it. */
    long inputBytes();

    /** {@code source} copied as it is, streamed. */
    record Copied(String name, Path source, long byteSize) implements OutputFile {
        @Override
        public long inputBytes() {
            return byteSize;
        }
    }

    /** {@code bytes} written (a configuration moeport made: config.json, hf_quant_config.json). */
    record Written(String name, byte[] bytes) implements OutputFile {
        @Override
        public long byteSize() {
            return bytes.length;
        }

        @Override
        public long inputBytes() {
            return 0;
        }
    }
}
