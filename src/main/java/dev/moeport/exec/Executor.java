package dev.moeport.exec;

import dev.moeport.MoeportException;
import dev.moeport.format.PartialFile;
import dev.moeport.format.TensorOutput;
import dev.moeport.format.TensorOutput.Sink;
import dev.moeport.io.DropBehind;
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
import java.lang.foreign.Arena;
import java.lang.foreign.MemorySegment;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.HashMap;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.function.ToIntFunction;
import java.util.function.ToLongFunction;

/**
 * Runs a {@link Plan}: jobs on a pool of worker threads, biggest first and across the output files ({@link
 * #startOrder}), each streaming its sources in
 * chunks of bounded size straight from the mapped input into the output file. No tensor is ever held
 * in the heap; each worker's scratch memory is a few chunks of native memory, and source pages are
 * released from the process (madvise DONTNEED) as soon as a chunk is written, and from the page cache where the run drops
 * behind ({@link DropBehind}) and reads them for the last time.
 *
 * <p>A shared amax ({@link AmaxSource.Shared}) and the jobs that need it are one task: the amax is computed
 * first, then those jobs run on the same thread, while their sources are still in the page cache. No
 * worker ever waits for another. A large copy or cast is split into parts, each a task ({@link #PART_BYTES}).
 */
public final class Executor {
    private final QuantKernel kernel;
    private final int threads;
    private final boolean dropBehind;
    private final long partBytes;

    /**
     * Bytes of a part of a copy or cast, which several threads share: one thread copying a 704 MB embedding past the
     * page cache, at about 100 MB/s beside 15 threads that quantized, ended a 9.3 GB NVFP4 export in 4 GiB on the
     * 16-core GPU machine 0.7 s after every other job.
     */
    static final long PART_BYTES = 64L << 20;

    /** @param dropBehind drop the input from the page cache as it is read for the last time ({@link DropBehind}) */
    public Executor(QuantKernel kernel, int threads, boolean dropBehind) {
        this(kernel, threads, dropBehind, PART_BYTES);
    }

    Executor(QuantKernel kernel, int threads, boolean dropBehind, long partBytes) {
        this.kernel = kernel;
        this.threads = Math.max(1, threads);
        this.dropBehind = dropBehind;
        this.partBytes = partBytes;
    }

    /** Runs every job of {@code plan} into {@code writer} (which the caller commits). */
    public void run(Plan plan, TensorOutput writer, Progress progress) {
        Map<AmaxSource.SharedAmax, Task> byAmax = new LinkedHashMap<>();
        List<Task> planned = new ArrayList<>();
        for (Job job : plan.jobs()) {
            if (job instanceof Job.Quantize q && q.amax() instanceof AmaxSource.Shared shared) {
                byAmax.computeIfAbsent(shared.amax(), a -> {
                    Task t = new Task(a, new ArrayList<>(), null);
                    planned.add(t);
                    return t;
                }).jobs().add(job);
            } else if ((job instanceof Job.Copy || job instanceof Job.Cast)
                    && job.pieces().stream().mapToLong(Piece::byteSize).sum() > partBytes) {
                List<List<Stretch>> parts = Stretch.parts(Stretch.of(job.pieces()), partBytes);
                AtomicInteger left = new AtomicInteger(parts.size());
                parts.forEach(part -> planned.add(new Task(null, List.of(job), new Part(part, left))));
            } else {
                planned.add(new Task(null, List.of(job), null));
            }
        }
        List<Task> order = startOrder(planned, task -> plan.layout().indexOf(task.jobs().getFirst().outputs().getFirst().name()), Task::inputBytes, threads);
        WarmUp warmUp = warmUpKernels(plan);
        try (ReadAhead<List<Piece>> readAhead = ReadAhead.of(order.stream().map(Task::pieces).toList(), dropBehind)) {
            List<WorkerPool.Task<Void>> tasks = new ArrayList<>();
            for (int i = 0; i < order.size(); i++) {
                Task task = order.get(i);
                int index = i;
                tasks.add(scratch -> {
                    readAhead.starting(index);
                    if (task.usesKernel()) {
                        warmUp.await();
                    }
                    Worker worker = new Worker(writer, progress, scratch);
                    if (task.amax() != null) {
                        worker.shared.put(task.amax(), worker.amaxOver(task.amax().pieces(), task.amax().key()));
                    }
                    if (task.part() != null) {
                        worker.run(task.jobs().getFirst(), task.part());
                    } else {
                        task.jobs().forEach(worker::run);
                    }
                    return null;
                });
            }
            WorkerPool.run(threads, "moeport-worker", tasks);
        }
    }

    /** Starts reading the input's largest tensors, which a run's first jobs read, while the command plans the run. */
    public static void readAheadWhilePlanning(java.util.Collection<? extends dev.moeport.tensor.Tensor> input) {
        ReadAhead.largestWhilePlanning(input);
    }

    /** Bytes staged for a kernel at a time: half a core's L2 cache, or so. */
    private static final long STAGE_BYTES = 256 << 10;

    /** Quantized input from which a warm-up of the kernels pays ({@link KernelWarmUp}): a second's work or so. */
    public static final long WARM_UP_FROM = 1L << 30;

    /**
     * Starts warming up the kernels that quantize {@code dtype} to {@code format} on a thread of their own, once per
     * JVM: a command that knows its formats starts it while it plans, and the run that needs it waits for it.
     */
    public static void warmUpAhead(QuantKernel kernel, QuantFormat format, DType dtype) {
        KernelWarmUp.inBackground(kernel, format, dtype);
    }

    /**
     * The warm-ups of the kernels of the plan's large quantized inputs (started here unless a command started them
     * ahead): tasks that copy start at once (the largest tensors, embeddings, often are copies), those that quantize
     * wait for them.
     */
    private WarmUp warmUpKernels(Plan plan) {
        record Use(QuantFormat format, DType dtype) {}
        Map<Use, Long> quantized = new LinkedHashMap<>();
        for (Job job : plan.jobs()) {
            if (job instanceof Job.Quantize q) {
                quantized.merge(new Use(q.format(), q.exportType()), q.inputBytes(), Long::sum);
            }
        }
        return new WarmUp(quantized.entrySet().stream().filter(e -> e.getValue() >= WARM_UP_FROM)
                .map(e -> KernelWarmUp.inBackground(kernel, e.getKey().format(), e.getKey().dtype())).toList());
    }

    /** The warm-ups' threads. */
    private record WarmUp(List<Thread> threads) {
        /** Waits for the warm-ups to end; a cancelled run's workers stop waiting. */
        void await() {
            for (Thread thread : threads) {
                try {
                    thread.join();
                } catch (InterruptedException e) {
                    Thread.currentThread().interrupt();
                    WorkerPool.checkCancelled();
                }
            }
        }
    }

    /**
     * The order tasks start in: largest first, so that the long ones do not leave one thread busy at the end; and of
     * tasks of one size, one from each output file in turn, a window of {@code threads} files at a time. The kernel
     * lets one thread at a time write a file, and marks a mapped file's pages dirty under one lock of the file's: a
     * model's tensors lie in their files in order, so its many tensors of one size (the experts) kept every thread on
     * one file. Each window's files finish together, and a resumed run keeps the files that finished.
     */
    static <T> List<T> startOrder(List<T> tasks, ToIntFunction<T> file, ToLongFunction<T> size, int threads) {
        record Keyed<T>(T task, int window, long bytes, int turn, int file) {}
        // windows of the files these tasks write (a part of a plan writes some of its files only)
        int[] files = tasks.stream().mapToInt(file).distinct().sorted().toArray();
        record SizeInFile(int file, long bytes) {}
        Map<SizeInFile, Integer> earlier = new HashMap<>();
        List<Keyed<T>> keyed = new ArrayList<>();
        for (T task : tasks) {
            int f = file.applyAsInt(task);
            long bytes = size.applyAsLong(task);
            int turn = earlier.merge(new SizeInFile(f, bytes), 1, Integer::sum) - 1;
            keyed.add(new Keyed<>(task, java.util.Arrays.binarySearch(files, f) / Math.max(1, threads), bytes, turn, f));
        }
        keyed.sort(Comparator.<Keyed<T>>comparingInt(Keyed::window).thenComparing(Comparator.<Keyed<T>>comparingLong(Keyed::bytes).reversed())
                .thenComparingInt(Keyed::turn).thenComparingInt(Keyed::file));
        return keyed.stream().map(Keyed::task).toList();
    }

    /** What one thread runs in one go: a shared amax (or none) and the jobs that need it, or a part of one job. */
    private record Task(AmaxSource.SharedAmax amax, List<Job> jobs, Part part) {
        long inputBytes() {
            return pieces().stream().mapToLong(Piece::inputBytes).sum() + (amax == null ? 0 : amax.inputBytes());
        }

        /** What its jobs read (the shared amax reads the same). */
        List<Piece> pieces() {
            return part != null ? part.stretches().stream().map(Stretch::piece).toList()
                    : jobs.stream().flatMap(j -> j.pieces().stream()).toList();
        }

        /** Whether it runs the quantizing kernels (which wait for their warm-up). */
        boolean usesKernel() {
            return amax != null || jobs.stream().anyMatch(job -> job instanceof Job.Quantize);
        }
    }

    /** A part of a copy or cast: its stretches, and the count of the job's parts not yet done (shared by them). */
    private record Part(List<Stretch> stretches, AtomicInteger left) {}

    /**
     * A piece of a copy or cast job and where its bytes begin among the bytes of the job's pieces: the offset of a copy's
     * output, and of a cast's before the change of width.
     */
    record Stretch(Piece piece, long at) {
        /** The pieces of a job, each where it begins. */
        static List<Stretch> of(List<Piece> pieces) {
            List<Stretch> out = new ArrayList<>();
            long at = 0;
            for (Piece p : pieces) {
                out.add(new Stretch(p, at));
                at += p.byteSize();
            }
            return out;
        }

        /**
         * {@code whole} in parts of about {@code partBytes}, in order: a piece larger than that is cut between rows (an
         * even count, as {@link PieceReader#rowsPerChunk} counts them), smaller ones share a part.
         */
        static List<List<Stretch>> parts(List<Stretch> whole, long partBytes) {
            List<List<Stretch>> parts = new ArrayList<>();
            List<Stretch> part = new ArrayList<>();
            long bytes = 0;
            for (Stretch s : whole) {
                long rows = s.piece().rows();
                long rowBytes = PieceReader.rowBytes(s.piece());
                long step = s.piece().byteSize() > partBytes ? PieceReader.rowsPer(partBytes, rowBytes, 1) : rows;
                for (long r = 0; r < rows; r += step) {
                    long n = Math.min(step, rows - r);
                    Stretch cut = n == rows ? s : new Stretch(PieceReader.narrow(s.piece(), r, n), s.at() + r * rowBytes);
                    if (bytes > 0 && bytes + cut.piece().byteSize() > partBytes) {
                        parts.add(part);
                        part = new ArrayList<>();
                        bytes = 0;
                    }
                    part.add(cut);
                    bytes += cut.piece().byteSize();
                }
            }
            if (!part.isEmpty()) {
                parts.add(part);
            }
            return parts;
        }
    }

    /** One job's work, on its thread's scratch buffers. */
    private final class Worker {
        final TensorOutput writer;
        final Progress progress;
        final Scratch scratch;
        /** The shared amaxes this worker's task computed, for its jobs. */
        final Map<AmaxSource.SharedAmax, Float> shared = new HashMap<>();

        Worker(TensorOutput writer, Progress progress, Scratch scratch) {
            this.writer = writer;
            this.progress = progress;
            this.scratch = scratch;
        }

        void run(Job job) {
            switch (job) {
                case Job.Copy copy -> copy(copy, Stretch.of(copy.pieces()));
                case Job.Cast cast -> cast(cast, Stretch.of(cast.pieces()));
                case Job.Quantize q -> quantize(q);
                case Job.Synthesize s -> synthesize(s);
            }
            progress.addTensors(job.outputs().size());
        }

        /** A part of a copy or cast; the job's last part to end counts its tensors. */
        void run(Job job, Part part) {
            switch (job) {
                case Job.Copy copy -> copy(copy, part.stretches());
                case Job.Cast cast -> cast(cast, part.stretches());
                default -> throw new IllegalArgumentException("only copies and casts run in parts: " + job.transform());
            }
            if (part.left().decrementAndGet() == 0) {
                progress.addTensors(job.outputs().size());
            }
        }

        /** Each piece streamed in chunks to its place in the output: a source's chunks go from the mapping to the file. */
        private void copy(Job.Copy job, List<Stretch> stretches) {
            Sink sink = writer.sink(job.output().name());
            for (Stretch stretch : stretches) {
                Piece piece = stretch.piece();
                long base = stretch.at();
                long rowBytes = PieceReader.rowBytes(piece);
                long rowInput = piece.rows() == 0 ? 0 : piece.inputBytes() / piece.rows();
                PieceReader.forEachChunk(piece, scratch, false, dropBehind, (bytes, first, rows) -> {
                    try {
                        sink.write(base + first * rowBytes, bytes);
                    } catch (MoeportException e) {
                        if (piece instanceof Piece.Source source && e.getCause() instanceof PartialFile.InputChanged) {
                            throw PieceReader.inputChanged(source, e);
                        }
                        throw e;
                    }
                    progress.addBytes(rows * rowInput);
                });
            }
        }

        private void cast(Job.Cast job, List<Stretch> stretches) {
            Sink sink = writer.sink(job.output().name());
            DType from = job.from();
            DType to = job.output().dtype();
            for (Stretch stretch : stretches) {
                Piece piece = stretch.piece();
                long base = stretch.at() / from.byteWidth() * to.byteWidth();
                long rowInput = piece.rows() == 0 ? 0 : piece.inputBytes() / piece.rows();
                PieceReader.forEachChunk(piece, scratch, true, dropBehind, (bytes, first, rows) -> {
                    long count = bytes.byteSize() / from.byteWidth();
                    MemorySegment out = scratch.buffer(Scratch.OUTPUT, count * to.byteWidth());
                    ElementCast.convert(bytes, from, out, to, count);
                    sink.write(base + first * (PieceReader.rowBytes(piece) / from.byteWidth()) * to.byteWidth(), out);
                    progress.addBytes(rows * rowInput);
                });
            }
        }

        private void quantize(Job.Quantize job) {
            QuantFormat format = job.format();
            Shape shape = job.weightShape();
            long in = shape.dim(-1);
            long out = shape.dim(-2);
            long slabs = shape.numel() / (out * in);
            PieceReader.Rows rows = new PieceReader.Rows(job.pieces(), dropBehind);
            boolean scaleIsTensorScale = format.scaleIsTensorScale();
            boolean perSlabScale = job.amax() instanceof AmaxSource.PerExpert;
            float tensorScale = switch (job.amax()) {
                case AmaxSource.None none -> 0;
                case AmaxSource.PerExpert perExpert -> 0;
                case AmaxSource.Calibrated c -> format.tensorScale(c.amax());
                case AmaxSource.Own own -> format.tensorScale(exportAmax(job, amaxOver(job.pieces(), job.weight().name())));
                case AmaxSource.Shared s -> format.tensorScale(exportAmax(job, sharedAmax(s.amax())));
            };
            Sink weight = writer.sink(job.weight().name());
            Sink scale = writer.sink(job.weightScale().name());
            long weightSlabBytes = weightBytes(format, out, in);
            long scaleSlabBytes = scaleBytes(format, out, in);
            for (long slab = 0; slab < slabs; slab++) {
                float slabScale = perSlabScale
                        ? format.tensorScale(exportAmax(job, amaxOver(rows.slice(slab * out, out), job.weight().name() + "[" + slab + "]")))
                        : tensorScale;
                if (scaleIsTensorScale) {
                    scale.write(slab * Float.BYTES, scratch.f32(slabScale));
                }
                quantizeSlab(job, rows, slab * out, out, in, slabScale, weight, slab * weightSlabBytes,
                        scaleIsTensorScale ? null : scale, slab * scaleSlabBytes);
            }
            if (job.weightScale2() != null) {
                writer.sink(job.weightScale2().name()).write(0, scratch.f32(stored(job, tensorScale)));
            }
            if (job.inputScale() != null) {
                writer.sink(job.inputScale().name()).write(0, scratch.f32(stored(job, format.tensorScale(job.inputAmax()))));
            }
        }

        /** A per-tensor scale as the output stores it: itself, or its reciprocal (an IEEE f32 division, as PyTorch's 1 / x). */
        private static float stored(Job.Quantize job, float scale) {
            return job.reciprocalTensorScales() ? 1f / scale : scale;
        }

        private void quantizeSlab(Job.Quantize job, PieceReader.Rows rows, long firstRow, long out, long in, float tensorScale,
                                  Sink weight, long weightBase, Sink scale, long scaleBase) {
            QuantFormat format = job.format();
            DType exportType = job.exportType();
            long step = PieceReader.rowsPerChunk(rows.rowBytes(), format.rowGranularity());
            // Each chunk's rows reach the kernel a cache-sized group at a time; its output is written whole.
            long group = PieceReader.rowsPer(STAGE_BYTES, rows.rowBytes(), format.rowGranularity());
            for (long r = 0; r < out; r += step) {
                WorkerPool.checkCancelled();
                long n = Math.min(step, out - r);
                long chunkRow = firstRow + r;
                MemorySegment w = scratch.buffer(Scratch.OUTPUT, weightBytes(format, n, in));
                MemorySegment s = scale == null ? MemorySegment.NULL : scratch.buffer(Scratch.SCALES, scaleBytes(format, n, in));
                try (Arena arena = Arena.ofConfined()) {
                    rows.forEachGroup(chunkRow, n, group, arena, scratch, (src, k, m) -> {
                        if (exportType != job.sourceType()) {
                            MemorySegment cast = scratch.buffer(Scratch.CAST, m * in * exportType.byteWidth());
                            ElementCast.convert(src, job.sourceType(), cast, exportType, m * in);
                            src = cast;
                        }
                        MemorySegment groupScale = s == MemorySegment.NULL ? s : s.asSlice(scaleBytes(format, k, in), scaleBytes(format, m, in));
                        try {
                            kernel.quantize(format, src, exportType, m, in, tensorScale, w.asSlice(weightBytes(format, k, in), weightBytes(format, m, in)),
                                    groupScale);
                        } catch (NonFiniteValueException e) {
                            throw nonFinite(job.weight().name(), chunkRow + k + e.index() / in, e.index() % in);
                        }
                    });
                }
                weight.write(weightBase + weightBytes(format, r, in), w);
                if (scale != null) {
                    scale.write(scaleBase + scaleBytes(format, r, in), s);
                }
                progress.addBytes(n * rows.rowBytes());
            }
        }

        private static long weightBytes(QuantFormat format, long rows, long cols) {
            return format.weightType().byteSize(format.weightShape(Shape.of(rows, cols)).numel());
        }

        private static long scaleBytes(QuantFormat format, long rows, long cols) {
            return format.scaleType().byteSize(format.scaleShape(Shape.of(rows, cols)).numel());
        }

        /**
         * The amax of the weight in its export dtype, from the amax of its source values: rounding to
         * nearest is monotonic and symmetric, so the largest rounded magnitude is the rounded largest
         * one. (A calibrated amax is taken as it is.)
         */
        private static float exportAmax(Job.Quantize job, float sourceAmax) {
            return job.exportType() != job.sourceType() ? FloatFormats.roundTo(job.exportType(), sourceAmax) : sourceAmax;
        }

        /** A shared amax, which the task computed before its jobs. */
        private float sharedAmax(AmaxSource.SharedAmax amax) {
            Float value = shared.get(amax);
            if (value == null) {
                throw new IllegalStateException(amax.key() + ": a job ran before its shared amax");
            }
            return value;
        }

        private float amaxOver(List<Piece> pieces, String name) {
            float[] max = {0};
            for (Piece piece : pieces) {
                if (!(piece instanceof Piece.Source source)) {
                    continue; // zeros do not change an amax
                }
                DType dtype = source.tensor().dtype();
                long width = dtype.byteWidth();
                long cols = piece.rows() == 0 ? 1 : PieceReader.rowBytes(piece) / width;
                // A chunk is staged for the kernel a cache-sized piece at a time: it is read once, not copied to memory and read again.
                // Its pages stay cached for the quantizing pass.
                PieceReader.forEachChunk(piece, scratch, false, false, (bytes, first, rows) -> {
                    for (long at = 0; at < bytes.byteSize(); at += STAGE_BYTES) {
                        long n = Math.min(STAGE_BYTES, bytes.byteSize() - at);
                        MemorySegment part = PieceReader.staged(source, bytes.asSlice(at, n), scratch.buffer(Scratch.INPUT, n));
                        try {
                            max[0] = Math.max(max[0], kernel.amax(part, dtype, n / width));
                        } catch (NonFiniteValueException e) {
                            long index = at / width + e.index();
                            throw nonFinite(name, first + index / cols, index % cols);
                        }
                    }
                });
            }
            return max[0];
        }

        private void synthesize(Job.Synthesize job) {
            OutputTensor output = job.output();
            DType dtype = output.dtype();
            Sink sink = writer.sink(output.name());
            long count = output.shape().numel();
            long step = PieceReader.CHUNK_BYTES / dtype.byteWidth();
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
    }

    private static MoeportException nonFinite(String tensor, long row, long col) {
        return new MoeportException("tensor '" + tensor + "': NaN or infinite value at [" + row + ", " + col
                + "]; quantizing it would give garbage scales (repair the weight, or keep it unquantized with --exclude)");
    }
}
