package dev.moeport.exec;

import dev.moeport.MoeportException;
import dev.moeport.format.safetensors.SafetensorsWriter;
import dev.moeport.format.safetensors.SafetensorsWriter.TensorSink;
import dev.moeport.io.NativeIO;
import dev.moeport.plan.AmaxSource;
import dev.moeport.plan.Job;
import dev.moeport.plan.OutputTensor;
import dev.moeport.plan.Piece;
import dev.moeport.plan.Plan;
import dev.moeport.quant.NonFiniteValueException;
import dev.moeport.quant.QuantFormat;
import dev.moeport.quant.QuantKernel;
import dev.moeport.tensor.DType;
import dev.moeport.tensor.FloatFormats;
import dev.moeport.tensor.Shape;
import dev.moeport.tensor.Tensor;
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.lang.foreign.ValueLayout;
import java.nio.ByteOrder;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;
import java.util.Map;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;

/**
 * Runs a {@link Plan}: jobs on a pool of worker threads, biggest first, each streaming its sources in
 * chunks of bounded size straight from the mapped input into the output file. No tensor is ever held
 * in the heap; each worker's scratch memory is a few chunks of native memory, and source pages are
 * released from the process (madvise DONTNEED) as soon as a chunk is written.
 */
public final class Executor {
    /** Bytes of input a chunk reads at most (more only when a single row is larger). */
    static final long CHUNK_BYTES = 8L << 20;
    private static final ValueLayout.OfFloat F32 = ValueLayout.JAVA_FLOAT_UNALIGNED.withOrder(ByteOrder.LITTLE_ENDIAN);

    private final QuantKernel kernel;
    private final int threads;
    private final Map<String, CompletableFuture<Float>> amaxCache = new ConcurrentHashMap<>();

    public Executor(QuantKernel kernel, int threads) {
        this.kernel = kernel;
        this.threads = Math.max(1, threads);
    }

    /** Runs every job of {@code plan} into {@code writer} (which the caller commits). */
    public void run(Plan plan, SafetensorsWriter writer, Progress progress) {
        List<Job> order = new ArrayList<>(plan.jobs());
        // Largest first: the long jobs start early instead of leaving one thread busy at the end.
        order.sort(Comparator.comparingLong(Job::inputBytes).reversed());
        ExecutorService pool = Executors.newFixedThreadPool(threads, r -> {
            Thread t = new Thread(r, "moeport-worker");
            t.setDaemon(true);
            return t;
        });
        List<Worker> workers = new ArrayList<>();
        ThreadLocal<Worker> local = ThreadLocal.withInitial(() -> {
            Worker w = new Worker(writer, progress);
            synchronized (workers) {
                workers.add(w);
            }
            return w;
        });
        try {
            List<Future<?>> futures = new ArrayList<>();
            for (Job job : order) {
                futures.add(pool.submit(() -> local.get().run(job)));
            }
            for (Future<?> f : futures) {
                await(f, pool);
            }
        } finally {
            pool.shutdownNow();
            synchronized (workers) {
                workers.forEach(w -> w.scratch.close());
            }
        }
    }

    private static void await(Future<?> f, ExecutorService pool) {
        try {
            f.get();
        } catch (ExecutionException e) {
            pool.shutdownNow();
            Throwable cause = e.getCause();
            if (cause instanceof RuntimeException re) {
                throw re;
            }
            if (cause instanceof Error err) {
                throw err;
            }
            throw new IllegalStateException(cause);
        } catch (InterruptedException e) {
            pool.shutdownNow();
            Thread.currentThread().interrupt();
            throw new MoeportException("interrupted");
        }
    }

    /** One worker thread's state: its reusable scratch buffers. */
    private final class Worker {
        final SafetensorsWriter writer;
        final Progress progress;
        final Scratch scratch = new Scratch();

        Worker(SafetensorsWriter writer, Progress progress) {
            this.writer = writer;
            this.progress = progress;
        }

        void run(Job job) {
            switch (job) {
                case Job.Copy copy -> copy(copy);
                case Job.Cast cast -> cast(cast);
                case Job.Quantize q -> quantize(q);
                case Job.Dequantize d -> dequantize(d);
                case Job.Synthesize s -> synthesize(s);
            }
            progress.addTensors(job.outputs().size());
        }

        private void copy(Job.Copy job) {
            TensorSink sink = writer.sink(job.output().name());
            long offset = 0;
            for (Piece piece : job.pieces()) {
                switch (piece) {
                    case Piece.Zeros z -> {
                        for (long done = 0; done < z.byteSize(); ) {
                            long n = Math.min(CHUNK_BYTES, z.byteSize() - done);
                            sink.write(offset + done, scratch.zeros(n));
                            done += n;
                        }
                    }
                    case Piece.Source s -> forEachChunk(s.tensor(), (chunk, at) -> sink.write(at, chunk), offset);
                }
                offset += piece.byteSize();
            }
        }

        private void cast(Job.Cast job) {
            TensorSink sink = writer.sink(job.output().name());
            DType to = job.output().dtype();
            long offset = 0;
            for (Piece piece : job.pieces()) {
                Piece.Source s = (Piece.Source) piece;
                long outStart = offset;
                forEachChunk(s.tensor(), (chunk, at) -> {
                    long count = chunk.byteSize() / job.from().byteWidth();
                    MemorySegment out = scratch.buffer(Scratch.OUTPUT, count * to.byteWidth());
                    ElementCast.convert(chunk, job.from(), out, to, count);
                    sink.write(outStart + at / job.from().byteWidth() * to.byteWidth(), out);
                }, 0);
                offset += s.tensor().numel() * to.byteWidth();
            }
        }

        /**
         * Calls {@code action} for consecutive whole-row chunks of {@code t}, with the chunk's byte
         * offset plus {@code base}; releases each chunk's source pages afterwards.
         */
        private void forEachChunk(Tensor t, ChunkAction action, long base) {
            long rows = t.rank() == 0 ? 1 : t.shape().dim(0);
            long rowBytes = rows == 0 ? 0 : t.byteSize() / rows;
            long step = rowBytes == 0 ? Math.max(rows, 1) : Math.max(1, CHUNK_BYTES / rowBytes);
            for (long r = 0; r < rows; r += step) {
                long n = Math.min(step, rows - r);
                Tensor part = t.rank() == 0 || (r == 0 && n == rows) ? t : t.narrow(r, n, t.name());
                try (Arena arena = Arena.ofConfined()) {
                    MemorySegment bytes = part.bytes(arena);
                    action.accept(bytes, base + r * rowBytes);
                    release(bytes);
                }
                progress.addBytes(n * rowBytes);
            }
            if (rows == 0 || rowBytes == 0) {
                progress.addBytes(t.byteSize());
            }
        }

        private void quantize(Job.Quantize job) {
            QuantFormat format = job.format();
            Shape shape = job.weightShape();
            long in = shape.dim(-1);
            long out = shape.dim(-2);
            long slabs = shape.numel() / (out * in);
            RowSource rows = new RowSource(job.pieces(), in * job.sourceType().byteWidth());
            float tensorScale = 0;
            boolean perSlabScale = format == QuantFormat.FP8 && slabs > 1 && job.amax() instanceof AmaxSource.Computed;
            if (format.usesTensorAmax() && !perSlabScale) {
                tensorScale = format.tensorScale(amax(job.amax(), job));
            }
            TensorSink weight = writer.sink(job.weight().name());
            TensorSink scale = writer.sink(job.weightScale().name());
            long weightSlabBytes = format.weightType().byteSize(format.weightShape(Shape.of(out, in)).numel());
            long scaleSlabBytes = format.scaleType().byteSize(format.scaleShape(Shape.of(out, in)).numel());
            for (long slab = 0; slab < slabs; slab++) {
                float slabScale = tensorScale;
                if (perSlabScale) {
                    List<Piece> slabPieces = rows.slice(slab * out, out);
                    slabScale = format.tensorScale(amaxOver(slabPieces, job.weight().name() + "[" + slab + "]"));
                }
                if (format == QuantFormat.FP8) {
                    scale.write(slab * 4, scratch.f32(slabScale));
                }
                quantizeSlab(job, rows, slab * out, out, in, slabScale, weight, slab * weightSlabBytes,
                        format == QuantFormat.FP8 ? null : scale, slab * scaleSlabBytes);
            }
            if (job.weightScale2() != null) {
                writer.sink(job.weightScale2().name()).write(0, scratch.f32(tensorScale));
            }
            if (job.inputScale() != null) {
                writer.sink(job.inputScale().name()).write(0, scratch.f32(format.tensorScale(job.inputAmax())));
            }
        }

        private void quantizeSlab(Job.Quantize job, RowSource rows, long firstRow, long out, long in, float tensorScale,
                                  TensorSink weight, long weightBase, TensorSink scale, long scaleBase) {
            QuantFormat format = job.format();
            DType exportType = job.exportType();
            int granularity = format.rowGranularity();
            long rowBytes = in * job.sourceType().byteWidth();
            long step = Math.max(granularity, CHUNK_BYTES / rowBytes / granularity * granularity);
            for (long r = 0; r < out; r += step) {
                long n = Math.min(step, out - r);
                try (Arena arena = Arena.ofConfined()) {
                    MemorySegment src = rows.read(firstRow + r, n, arena, scratch);
                    if (exportType != job.sourceType()) {
                        MemorySegment cast = scratch.buffer(Scratch.CAST, n * in * exportType.byteWidth());
                        ElementCast.convert(src, job.sourceType(), cast, exportType, n * in);
                        src = cast;
                    }
                    Shape chunk = Shape.of(n, in);
                    MemorySegment w = scratch.buffer(Scratch.OUTPUT, format.weightType().byteSize(format.weightShape(chunk).numel()));
                    MemorySegment s = scale == null ? MemorySegment.NULL : scratch.buffer(Scratch.SCALES, format.scaleType().byteSize(format.scaleShape(chunk).numel()));
                    try {
                        kernel.quantize(format, src, exportType, n, in, tensorScale, w, s);
                    } catch (NonFiniteValueException e) {
                        throw nonFinite(job.weight().name(), firstRow + r + e.index() / in, e.index() % in);
                    }
                    Shape before = Shape.of(r, in);
                    weight.write(weightBase + format.weightType().byteSize(format.weightShape(before).numel()), w);
                    if (scale != null) {
                        scale.write(scaleBase + format.scaleType().byteSize(format.scaleShape(before).numel()), s);
                    }
                    rows.release();
                }
                progress.addBytes(n * rowBytes);
            }
        }

        private float amax(AmaxSource source, Job.Quantize job) {
            return switch (source) {
                case AmaxSource.Calibrated c -> c.amax();
                case AmaxSource.Computed c -> {
                    CompletableFuture<Float> mine = new CompletableFuture<>();
                    CompletableFuture<Float> existing = amaxCache.putIfAbsent(c.key(), mine);
                    if (existing != null) {
                        yield existing.join();
                    }
                    try {
                        float value = amaxOver(c.pieces(), c.key());
                        mine.complete(value);
                        yield value;
                    } catch (RuntimeException e) {
                        mine.completeExceptionally(e);
                        throw e;
                    }
                }
            };
        }

        private float amaxOver(List<Piece> pieces, String name) {
            float[] max = {0};
            for (Piece piece : pieces) {
                Tensor t = ((Piece.Source) piece).tensor();
                DType dtype = t.dtype();
                forEachChunkQuietly(t, (chunk, at) -> {
                    try {
                        max[0] = Math.max(max[0], kernel.amax(chunk, dtype, chunk.byteSize() / dtype.byteWidth()));
                    } catch (NonFiniteValueException e) {
                        long element = at / dtype.byteWidth() + e.index();
                        long cols = t.rank() < 2 ? 1 : t.shape().dim(-1);
                        throw nonFinite(name, element / cols, element % cols);
                    }
                });
            }
            return max[0];
        }

        /** As {@link #forEachChunk} without counting progress: a second read of bytes already counted. */
        private void forEachChunkQuietly(Tensor t, ChunkAction action) {
            long rows = t.rank() == 0 ? 1 : t.shape().dim(0);
            long rowBytes = rows == 0 ? 0 : t.byteSize() / rows;
            long step = rowBytes == 0 ? Math.max(rows, 1) : Math.max(1, CHUNK_BYTES / rowBytes);
            for (long r = 0; r < rows; r += step) {
                long n = Math.min(step, rows - r);
                Tensor part = t.rank() == 0 || (r == 0 && n == rows) ? t : t.narrow(r, n, t.name());
                try (Arena arena = Arena.ofConfined()) {
                    action.accept(part.bytes(arena), r * rowBytes);
                }
            }
        }

        private void synthesize(Job.Synthesize job) {
            OutputTensor output = job.output();
            DType dtype = output.dtype();
            TensorSink sink = writer.sink(output.name());
            long count = output.shape().numel();
            long step = CHUNK_BYTES / dtype.byteWidth();
            float span = job.high() - job.low();
            long block = count / job.seeds().size();
            for (long start = 0; start < count; start += step) {
                long n = Math.min(step, count - start);
                MemorySegment out = scratch.buffer(Scratch.OUTPUT, n * dtype.byteWidth());
                for (long i = 0; i < n; i++) {
                    long index = start + i;
                    // SplitMix64's finalizer of (seed, index): independent of how the tensor is chunked.
                    long z = job.seeds().get((int) (index / block)) + index % block * 0x9E3779B97F4A7C15L;
                    z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
                    z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
                    z ^= z >>> 31;
                    float unit = (z >>> 40) * 0x1.0p-24f;
                    FloatFormats.write(out, dtype, i, job.low() + unit * span);
                }
                sink.write(start * dtype.byteWidth(), out);
                progress.addBytes(n * dtype.byteWidth());
            }
        }

        private void dequantize(Job.Dequantize job) {
            QuantFormat format = job.format();
            OutputTensor output = job.output();
            long in = output.shape().dim(-1);
            long out = output.shape().rank() < 2 ? 1 : output.shape().dim(-2);
            long slabs = output.shape().numel() / (out * in);
            // fp8 keeps one scale per tensor, or per expert of a stack; nvfp4 one weight_scale_2.
            Piece.Source perTensor = format == QuantFormat.FP8 ? job.scale() : job.scale2();
            float[] tensorScales = new float[(int) slabs];
            java.util.Arrays.fill(tensorScales, 1f);
            if (perTensor != null) {
                try (Arena arena = Arena.ofConfined()) {
                    MemorySegment values = perTensor.tensor().bytes(arena);
                    for (int i = 0; i < slabs; i++) {
                        tensorScales[i] = values.getAtIndex(F32, perTensor.tensor().numel() == slabs ? i : 0);
                    }
                }
            }
            long weightRowBytes = format.weightType().byteSize(format.weightShape(Shape.of(1, in)).numel());
            RowSource weights = new RowSource(job.pieces(), weightRowBytes);
            RowSource scales = format == QuantFormat.FP8 ? null
                    : new RowSource(List.of(job.scale()), format.scaleType().byteSize(format.scaleShape(Shape.of(1, in)).numel()));
            TensorSink sink = writer.sink(output.name());
            long outRowBytes = in * output.dtype().byteWidth();
            long step = Math.max(1, CHUNK_BYTES / outRowBytes);
            for (long slab = 0; slab < slabs; slab++) {
                for (long r = slab * out; r < (slab + 1) * out; r += step) {
                    long n = Math.min(step, (slab + 1) * out - r);
                    try (Arena arena = Arena.ofConfined()) {
                        MemorySegment w = weights.read(r, n, arena, scratch);
                        MemorySegment s = scales == null ? MemorySegment.NULL : scales.read(r, n, arena, scratch.second());
                        MemorySegment dst = scratch.buffer(Scratch.OUTPUT, n * outRowBytes);
                        kernel.dequantize(format, w, s, tensorScales[(int) slab], n, in, output.dtype(), dst);
                        sink.write(r * outRowBytes, dst);
                        weights.release();
                    }
                    progress.addBytes(n * weightRowBytes);
                }
            }
        }
    }

    private static MoeportException nonFinite(String tensor, long row, long col) {
        return new MoeportException("tensor '" + tensor + "': NaN or infinite value at [" + row + ", " + col
                + "]; quantizing it would give garbage scales (repair the weight, or keep it unquantized with --exclude)");
    }

    /** Drops the pages of a chunk read from a mapped file: bounds the resident set on huge inputs. */
    private static void release(MemorySegment bytes) {
        if (bytes.isMapped()) {
            NativeIO.advise(bytes, NativeIO.Advice.DONTNEED);
        }
    }

    @FunctionalInterface
    private interface ChunkAction {
        void accept(MemorySegment chunk, long byteOffset);
    }

    /**
     * Rows of a matrix assembled from pieces of whole rows: a range of rows is one zero-copy slice when
     * a single piece holds it, else the parts gathered into scratch memory.
     */
    private static final class RowSource {
        private final List<Piece> pieces;
        private final long[] firstRows;
        private final long rowBytes;
        private final List<MemorySegment> lastRead = new ArrayList<>();

        RowSource(List<Piece> pieces, long rowBytes) {
            this.pieces = pieces;
            this.rowBytes = rowBytes;
            this.firstRows = new long[pieces.size() + 1];
            for (int i = 0; i < pieces.size(); i++) {
                firstRows[i + 1] = firstRows[i] + pieces.get(i).byteSize() / rowBytes;
            }
        }

        /** The pieces (narrowed) holding rows {@code [start, start + count)}. */
        List<Piece> slice(long start, long count) {
            List<Piece> out = new ArrayList<>();
            long end = start + count;
            for (int i = 0; i < pieces.size(); i++) {
                long a = Math.max(start, firstRows[i]);
                long b = Math.min(end, firstRows[i + 1]);
                if (a < b) {
                    out.add(narrow(pieces.get(i), a - firstRows[i], b - a));
                }
            }
            return out;
        }

        private Piece narrow(Piece piece, long start, long count) {
            return switch (piece) {
                case Piece.Source s -> start == 0 && count == s.rows() ? s
                        : new Piece.Source(s.tensor().narrow(start, count, s.tensor().name()));
                case Piece.Zeros z -> new Piece.Zeros(count, z.rowBytes());
            };
        }

        MemorySegment read(long start, long count, Arena arena, Scratch scratch) {
            lastRead.clear();
            List<Piece> parts = slice(start, count);
            if (parts.size() == 1 && parts.getFirst() instanceof Piece.Source s) {
                MemorySegment bytes = s.tensor().bytes(arena);
                lastRead.add(bytes);
                return bytes;
            }
            MemorySegment gathered = scratch.buffer(Scratch.GATHER, count * rowBytes);
            long at = 0;
            for (Piece part : parts) {
                if (part instanceof Piece.Source s) {
                    MemorySegment bytes = s.tensor().bytes(arena);
                    MemorySegment.copy(bytes, 0, gathered, at, bytes.byteSize());
                    lastRead.add(bytes);
                } else {
                    gathered.asSlice(at, part.byteSize()).fill((byte) 0);
                }
                at += part.byteSize();
            }
            return gathered;
        }

        /** Releases the source pages of the last {@link #read}. */
        void release() {
            lastRead.forEach(Executor::release);
            lastRead.clear();
        }
    }
}
