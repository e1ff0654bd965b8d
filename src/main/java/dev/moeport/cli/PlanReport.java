package dev.moeport.cli;

import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.moeport.convert.Conversion;
import dev.moeport.plan.AmaxSource;
import dev.moeport.plan.Job;
import dev.moeport.plan.OutputFile;
import dev.moeport.plan.OutputTensor;
import dev.moeport.plan.Part;
import dev.moeport.plan.Piece;
import dev.moeport.plan.Plan;
import dev.moeport.util.NaturalOrder;
import dev.moeport.util.Sizes;
import java.io.PrintWriter;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.List;

/** Prints a plan (dry runs) and the summary of a finished run, as text or JSON. */
final class PlanReport {
    private PlanReport() {}

    /** The plan; of a part, only the tensors of its files, and how its bytes compare with the other parts'. */
    static void printPlan(PrintWriter out, Plan plan, boolean json, Part part) {
        int[] owner = Conversion.owner(plan, part.count());
        long[] partBytes = new long[part.count() + 1];
        int ownShards = 0;
        for (int k = 0; k < owner.length; k++) {
            partBytes[owner[k]] += plan.layout().shards().get(k).dataBytes();
            ownShards += owner[k] == part.index() ? 1 : 0;
        }
        long largest = java.util.Arrays.stream(partBytes).max().orElse(0);
        double mean = (double) plan.outputBytes() / part.count();
        double balance = mean == 0 ? 1 : largest / mean;
        List<Row> rows = rows(plan, t -> owner[plan.layout().indexOf(t.name())] == part.index());
        if (json) {
            ObjectNode root = Json.document();
            root.put("dry_run", true);
            root.put("tensor_count", plan.outputTensorCount());
            root.put("input_bytes", plan.inputBytes());
            root.put("output_bytes", plan.outputBytes());
            root.put("shard_count", plan.layout().shards().size());
            if (!part.isWhole()) {
                ObjectNode p = root.putObject("part");
                p.put("index", part.index());
                p.put("count", part.count());
                p.put("source", part.source());
                p.put("shard_count", ownShards);
                p.put("output_bytes", partBytes[part.index()]);
                p.put("largest_part_bytes", largest);
                p.put("largest_to_mean", balance);
            }
            ArrayNode tensors = root.putArray("tensors");
            for (Row r : rows) {
                ObjectNode t = tensors.addObject();
                t.put("name", r.tensor.name());
                t.put("dtype", r.tensor.dtype().name());
                ArrayNode shape = t.putArray("shape");
                for (long d : r.tensor.shape().toArray()) {
                    shape.add(d);
                }
                t.put("bytes", r.tensor.byteSize());
                t.put("shard", plan.layout().shardOf(r.tensor.name()).fileName());
                t.put("transform", r.job.transform());
                ArrayNode sources = t.putArray("sources");
                r.job.pieces().forEach(p -> sources.add(p.describe()));
            }
            ArrayNode files = root.putArray("files");
            for (OutputFile f : plan.files()) {
                ObjectNode file = files.addObject();
                file.put("name", f.name());
                file.put("bytes", f.byteSize());
                file.put("source", f instanceof OutputFile.Copied c ? Json.path(c.source()) : null); // null: written by moeport
            }
            ArrayNode amaxes = root.putArray("shared_amaxes");
            for (AmaxSource.SharedAmax a : plan.sharedAmaxes()) {
                ObjectNode entry = amaxes.addObject();
                entry.put("key", a.key());
                entry.put("input_bytes", a.inputBytes());
                ArrayNode sources = entry.putArray("sources");
                a.pieces().forEach(p -> sources.add(p.describe()));
            }
            Json.print(out, root);
            return;
        }
        Table table = new Table("TENSOR", "DTYPE", "SHAPE", ">SIZE", "SHARD", "TRANSFORM", "SOURCE");
        for (Row r : rows) {
            table.add(r.tensor.name(), r.tensor.dtype(), r.tensor.shape(), Sizes.format(r.tensor.byteSize()),
                    plan.layout().indexOf(r.tensor.name()) + 1, r.job.transform(), sources(r.job));
        }
        table.print(out);
        if (!plan.files().isEmpty()) {
            Table files = new Table("FILE", ">SIZE", "FROM");
            for (OutputFile f : plan.files()) {
                files.add(f.name(), Sizes.format(f.byteSize()), f instanceof OutputFile.Copied c ? "copy of " + c.source() : "written");
            }
            files.print(out);
        }
        List<AmaxSource.SharedAmax> amaxes = plan.sharedAmaxes();
        if (!amaxes.isEmpty()) {
            out.println("shared amax: " + amaxes.size() + " group(s) of fused siblings carry one per-tensor scale; each group's amax is read ("
                    + Sizes.format(amaxes.stream().mapToLong(AmaxSource.SharedAmax::inputBytes).sum()) + " in all) before its jobs run");
        }
        long fileBytes = plan.files().stream().mapToLong(OutputFile::byteSize).sum();
        out.println("plan: " + plan.outputTensorCount() + " tensors, " + Sizes.format(plan.outputBytes()) + " in "
                + plan.layout().shards().size() + " shard(s)" + (plan.files().isEmpty() ? "" : " and " + plan.files().size() + " other file(s) ("
                + Sizes.format(fileBytes) + ")") + ", from " + Sizes.format(plan.inputBytes()) + " of input; nothing written (dry run)");
        if (!part.isWhole()) {
            out.printf(java.util.Locale.ROOT, "part %s%s: %d tensors, %d of the %d shard(s), %s; the largest part holds %s, %.3fx the mean%s%n", part,
                    part.source() == null ? "" : " (" + part.source() + ")", rows.size(), ownShards, owner.length, Sizes.format(partBytes[part.index()]),
                    Sizes.format(largest), balance, balance > 1.05 ? " (a smaller --max-shard-size gives each part more shards to even out)" : "");
        }
    }

    private record Row(OutputTensor tensor, Job job) {}

    private static List<Row> rows(Plan plan, java.util.function.Predicate<OutputTensor> shown) {
        List<Row> rows = new ArrayList<>();
        for (Job job : plan.jobs()) {
            for (OutputTensor t : job.outputs()) {
                if (shown.test(t)) {
                    rows.add(new Row(t, job));
                }
            }
        }
        rows.sort(Comparator.comparing(r -> r.tensor.name(), NaturalOrder.INSTANCE));
        return rows;
    }

    /** The pieces, shortened when there are many (a QKV split of many groups). */
    private static String sources(Job job) {
        List<Piece> pieces = job.pieces();
        if (pieces.size() <= 3) {
            return String.join(" + ", pieces.stream().map(Piece::describe).toList());
        }
        return pieces.getFirst().describe() + " + ... + " + pieces.getLast().describe() + " (" + pieces.size() + " pieces)";
    }

    static void printSummary(PrintWriter out, String verb, Path from, Path to, Conversion.Summary s, List<String> notes, boolean json) {
        if (json) {
            ObjectNode root = Json.document();
            root.put("input", from == null ? null : Json.path(from)); // null: synthesized, nothing read
            root.put("output", Json.path(to));
            root.put("tensor_count", s.tensors());
            root.put("input_bytes", s.inputBytes());
            root.put("output_bytes", s.outputBytes());
            root.put("shard_count", s.shards());
            root.put("seconds", s.elapsed().toNanos() / 1e9);
            root.put("input_bytes_per_second", s.inputRate());
            ArrayNode files = root.putArray("other_files");
            s.copiedFiles().forEach(files::add);
            root.put("kernel", s.kernel()); // null: nothing quantized or decoded
            Conversion.Parts p = s.parts();
            root.put("reused_shard_count", p.reused());
            root.put("complete", p.completed());
            root.put("write_behind", s.writeBehind());
            if (!p.part().isWhole()) {
                ObjectNode part = root.putObject("part");
                part.put("index", p.part().index());
                part.put("count", p.part().count());
                part.put("source", p.part().source());
                part.put("shard_count", p.own());
                part.put("written_shard_count", p.written());
                ArrayNode missing = part.putArray("unfinished");
                p.missing().forEach(missing::add);
            }
            ArrayNode n = root.putArray("notes");
            notes.forEach(n::add);
            Json.print(out, root);
            return;
        }
        out.printf(java.util.Locale.ROOT, "%s %d tensors (%s) from %s to %s in %.2f s, %s of input; %d shard(s)%n", verb, s.tensors(),
                Sizes.format(s.outputBytes()), from, to, s.elapsed().toNanos() / 1e9, Sizes.rate(s.inputRate()), s.shards());
        Conversion.Parts p = s.parts();
        if (!p.part().isWhole()) {
            out.printf("  part %s%s: wrote %d of its %d shard(s)%s; %s%n", p.part(), p.part().source() == null ? "" : " (" + p.part().source() + ")",
                    p.written(), p.own(), p.reused() > 0 ? ", reused " + p.reused() : "", p.completed()
                            ? "it ended last and completed " + to
                            : p.missing().isEmpty() ? "another part completed " + to
                            : p.missing().size() + " shard(s) of other parts are not finished yet (" + p.missing().getFirst()
                                    + (p.missing().size() > 1 ? ", ..." : "") + "): the last part to end completes " + to);
        } else if (p.reused() > 0) {
            out.println("  reused " + p.reused() + " of " + s.shards() + " shard(s) an interrupted run finished (--resume)");
        }
        notes.forEach(n -> out.println("  " + n));
        if (s.writeBehind()) {
            out.println("  write-behind: the output went to the disk as it was written, and the input left the page cache once read (--write-behind)");
        }
        if (s.kernel() != null) {
            out.println("  kernel: " + s.kernel());
        }
    }
}
