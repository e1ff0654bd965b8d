package dev.moeport.plan;

import dev.moeport.format.safetensors.ShardLayout;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;

/**
 * The whole conversion as data, built before a byte moves: every job with its source regions and
 * output tensors, where each output tensor goes (shard, offset), and the other files of the output. Dry
 * runs print it; the executor runs it; progress and sharding read it.
 */
public record Plan(List<Job> jobs, ShardLayout layout, List<OutputFile> files) {

    /** Lays the jobs' outputs out in shards of at most {@code maxShardBytes}, in natural name order. */
    public static Plan of(List<Job> jobs, long maxShardBytes) {
        List<ShardLayout.Spec> specs = new ArrayList<>();
        for (Job job : jobs) {
            for (OutputTensor t : job.outputs()) {
                specs.add(new ShardLayout.Spec(t.name(), t.dtype(), t.shape()));
            }
        }
        specs.sort(Comparator.comparing(ShardLayout.Spec::name, dev.moeport.util.NaturalOrder.INSTANCE));
        return new Plan(List.copyOf(jobs), ShardLayout.plan(specs, maxShardBytes), List.of());
    }

    /** This plan with {@code files} as the output's other files. */
    public Plan withFiles(List<OutputFile> files) {
        return new Plan(jobs, layout, List.copyOf(files));
    }

    /**
     * The amaxes that several quantize jobs share, each once, in job order: the executor computes each before
     * the jobs that need it.
     */
    public List<AmaxSource.SharedAmax> sharedAmaxes() {
        return jobs.stream().map(j -> j instanceof Job.Quantize q && q.amax() instanceof AmaxSource.Shared s ? s.amax() : null)
                .filter(java.util.Objects::nonNull).distinct().toList();
    }

    /**
     * The jobs that write a tensor of the files (by shard index) {@code shards} picks, with the same layout: a
     * part's share of a plan split over processes. A job whose outputs span files of two parts (a weight and
     * its scale either side of a shard boundary) runs in both; each writes its own files' tensors.
     */
    public Plan writing(java.util.function.IntPredicate shards) {
        List<Job> mine = jobs.stream().filter(j -> j.outputs().stream().anyMatch(t -> shards.test(layout.indexOf(t.name())))).toList();
        return mine.size() == jobs.size() ? this : new Plan(mine, layout, files);
    }

    /** Bytes read from the input: the tensors' stored bytes and the copied files. */
    public long inputBytes() {
        return jobs.stream().mapToLong(Job::inputBytes).sum() + files.stream().mapToLong(OutputFile::inputBytes).sum();
    }

    /** Whether running the plan calls the quantization kernel: it quantizes, or decodes a quantized input. */
    public boolean usesKernel() {
        return jobs.stream().anyMatch(j -> j instanceof Job.Quantize || j.pieces().stream().anyMatch(Plan::decodes));
    }

    /** Bytes of input the quantization kernel reads running the plan: what it quantizes, and what it decodes. */
    public long kernelBytes() {
        return jobs.stream().mapToLong(j -> j instanceof Job.Quantize ? j.inputBytes()
                : j.pieces().stream().filter(Plan::decodes).mapToLong(Piece::inputBytes).sum()).sum();
    }

    private static boolean decodes(Piece p) {
        return p instanceof Piece.Source s && s.tensor().decodes();
    }

    /** Bytes of the output's tensors. */
    public long outputBytes() {
        return layout.totalBytes();
    }

    public int outputTensorCount() {
        return layout.tensorCount();
    }
}
