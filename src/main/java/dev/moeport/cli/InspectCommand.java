package dev.moeport.cli;

import com.fasterxml.jackson.databind.node.ArrayNode;
import com.fasterxml.jackson.databind.node.ObjectNode;
import dev.moeport.format.Checkpoint;
import dev.moeport.format.Checkpoints;
import dev.moeport.tensor.Tensor;
import dev.moeport.tensor.TensorView;
import dev.moeport.util.Glob;
import dev.moeport.util.Names;
import dev.moeport.util.NaturalOrder;
import dev.moeport.util.Sizes;
import java.io.PrintWriter;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.concurrent.Callable;
import java.util.regex.Matcher;
import java.util.regex.Pattern;
import picocli.CommandLine.Command;
import picocli.CommandLine.Model.CommandSpec;
import picocli.CommandLine.Option;
import picocli.CommandLine.Parameters;
import picocli.CommandLine.Spec;

@Command(
        name = "inspect",
        sortOptions = false,
        mixinStandardHelpOptions = true,
        description = {
            "Lists the tensors of a checkpoint: name, dtype, shape and size, with totals.",
            "",
            "PATH is a .safetensors file, a *.safetensors.index.json, or a folder holding either, or a " +
                "Megatron torch_dist checkpoint folder (its entries that are not model tensors, such as optimizer" +
                " state, are counted as skipped). Large checkpoints are shown grouped: tensors that differ only " +
                "in their layer or expert numbers share one row, e.g. " +
                "'layers.{2,5}.mixer.experts.{0..7}.up_proj.weight  x16'."
        },
        footerHeading = "%nExamples:%n",
        footer = {
            "  moeport inspect ../shared/fixtures/nemotron_h_tiny/hf",
            "  moeport inspect ckpt/ --filter '*experts.3.*' --no-group",
            "  moeport inspect ckpt/model.safetensors.index.json --json | jq '.total_bytes'"
        })
final class InspectCommand implements Callable<Integer> {
    /** Above this many tensors the table is grouped unless --no-group is given. */
    private static final int GROUP_ABOVE = 200;
    /** A layer or expert number: a whole name component ({@code layers.12.}), or the digits ending a name ({@code weight12}). */
    private static final Pattern NUMBER_COMPONENT = Pattern.compile("(?<=^|\\.)\\d+(?=\\.|$)|(?<=[A-Za-z_])\\d+$");

    @Spec
    CommandSpec spec;

    @Parameters(paramLabel = "PATH", converter = CheckpointPath.class, description = "The checkpoint.")
    Path path;

    @Option(names = "--filter", paramLabel = "GLOB",
            description = "Only tensors whose name matches (repeatable; '*' matches any text, dots included).")
    List<String> filters = new ArrayList<>();

    @Option(names = "--group", negatable = true,
            description = "Group tensors that differ only in layer/expert numbers (default: when more than " + GROUP_ABOVE + ").")
    Boolean group;

    @Option(names = "--json", description = "Print JSON for scripts: every tensor (ungrouped) and the totals.")
    boolean json;

    @Override
    public Integer call() {
        PrintWriter out = spec.commandLine().getOut();
        List<Glob> globs = filters.stream().map(Glob::of).toList();
        try (Checkpoint ckpt = Checkpoints.open(path)) {
            List<Tensor> tensors = ckpt.tensors().values().stream()
                    .filter(t -> globs.isEmpty() || Glob.anyMatches(globs, t.name()))
                    .sorted((a, b) -> NaturalOrder.INSTANCE.compare(a.name(), b.name()))
                    .toList();
            if (json) {
                printJson(out, ckpt, tensors);
            } else {
                printTable(out, ckpt, tensors);
            }
        }
        return 0;
    }

    private void printTable(PrintWriter out, Checkpoint ckpt, List<Tensor> tensors) {
        out.println(ckpt.location() + ": " + ckpt.format() + ", " + ckpt.tensors().size() + " tensors, " + Sizes.format(ckpt.totalBytes()));
        boolean grouped = group != null ? group : tensors.size() > GROUP_ABOVE;
        Table table = grouped ? new Table("NAME", ">COUNT", "DTYPE", "SHAPE", ">SIZE") : new Table("NAME", "DTYPE", "SHAPE", ">SIZE");
        if (grouped) {
            for (Group g : group(tensors)) {
                table.add(Names.escaped(g.displayName()), "x" + g.count, g.dtype, g.shape, Sizes.format(g.bytes));
            }
        } else {
            for (Tensor t : tensors) {
                table.add(Names.escaped(t.name()), t.dtype(), t.shape(), Sizes.format(t.byteSize()));
            }
        }
        table.print(out);
        long bytes = tensors.stream().mapToLong(Tensor::byteSize).sum();
        Map<String, long[]> byDtype = byDtype(tensors);
        StringBuilder summary = new StringBuilder("total: " + tensors.size() + " tensors, " + Sizes.format(bytes) + " (" + bytes + " bytes)");
        if (!byDtype.isEmpty()) {
            summary.append("; ");
            byDtype.forEach((dtype, cb) -> summary.append(dtype).append(' ').append(cb[0]).append(" (").append(Sizes.format(cb[1])).append("), "));
            summary.setLength(summary.length() - 2);
        }
        if (!filters.isEmpty()) {
            summary.append(" [filtered from ").append(ckpt.tensors().size()).append(']');
        }
        out.println(summary);
        if (!ckpt.skipped().isEmpty()) {
            Map<String, Integer> byReason = new TreeMap<>();
            ckpt.skipped().values().forEach(reason -> byReason.merge(reason, 1, Integer::sum));
            int n = ckpt.skipped().size();
            StringBuilder skipped = new StringBuilder("skipped: " + n + (n == 1 ? " entry that is not a model tensor (" : " entries that are not model tensors ("));
            byReason.forEach((reason, count) -> skipped.append(reason).append(' ').append(count).append(", "));
            skipped.setLength(skipped.length() - 2);
            out.println(skipped.append(')'));
        }
    }

    private void printJson(PrintWriter out, Checkpoint ckpt, List<Tensor> tensors) {
        ObjectNode root = Json.document();
        root.put("path", Json.path(ckpt.location()));
        root.put("format", ckpt.format());
        root.put("tensor_count", tensors.size());
        root.put("total_bytes", tensors.stream().mapToLong(Tensor::byteSize).sum());
        ObjectNode dtypes = root.putObject("dtypes");
        byDtype(tensors).forEach((dtype, cb) -> dtypes.putObject(dtype).put("count", cb[0]).put("bytes", cb[1]));
        ArrayNode list = root.putArray("tensors");
        for (Tensor t : tensors) {
            ObjectNode node = list.addObject();
            node.put("name", t.name());
            node.put("dtype", t.dtype().name());
            ArrayNode shape = node.putArray("shape");
            for (long d : t.shape().toArray()) {
                shape.add(d);
            }
            node.put("bytes", t.byteSize());
            if (t instanceof TensorView v && v.file() != null) {
                node.put("file", v.file().getFileName().toString());
            }
        }
        ObjectNode skipped = root.putObject("skipped");
        ckpt.skipped().forEach(skipped::put);
        Json.print(out, root);
    }

    private static Map<String, long[]> byDtype(List<Tensor> tensors) {
        Map<String, long[]> byDtype = new TreeMap<>();
        for (Tensor t : tensors) {
            long[] cb = byDtype.computeIfAbsent(t.dtype().name(), k -> new long[2]);
            cb[0]++;
            cb[1] += t.byteSize();
        }
        return byDtype;
    }

    /** Tensors of one name pattern (numbers abstracted), dtype and shape. */
    private static final class Group {
        final String pattern;
        final String dtype;
        final String shape;
        final List<TreeSet<Long>> numbers = new ArrayList<>();
        int count;
        long bytes;

        Group(String pattern, String dtype, String shape) {
            this.pattern = pattern;
            this.dtype = dtype;
            this.shape = shape;
        }

        String displayName() {
            StringBuilder name = new StringBuilder();
            String[] parts = pattern.split("\u0000", -1);
            for (int i = 0; i < parts.length; i++) {
                name.append(parts[i]);
                if (i < numbers.size()) {
                    TreeSet<Long> values = numbers.get(i);
                    name.append(values.size() == 1 ? values.first().toString() : "{" + ranges(values) + "}");
                }
            }
            return name.toString();
        }

        private static String ranges(TreeSet<Long> values) {
            List<String> parts = new ArrayList<>();
            Long start = null;
            Long prev = null;
            for (long v : values) {
                if (start == null) {
                    start = v;
                } else if (v != prev + 1) {
                    parts.add(span(start, prev));
                    start = v;
                }
                prev = v;
            }
            parts.add(span(start, prev));
            return String.join(",", parts);
        }

        private static String span(long a, long b) {
            return a == b ? Long.toString(a) : b == a + 1 ? a + "," + b : a + ".." + b;
        }
    }

    private static List<Group> group(List<Tensor> tensors) {
        Map<String, Group> groups = new LinkedHashMap<>();
        for (Tensor t : tensors) {
            Matcher m = NUMBER_COMPONENT.matcher(t.name());
            List<Long> numbers = new ArrayList<>();
            StringBuilder pattern = new StringBuilder();
            while (m.find()) {
                numbers.add(Long.parseLong(m.group().length() > 18 ? "0" : m.group()));
                m.appendReplacement(pattern, "\u0000");
            }
            m.appendTail(pattern);
            String key = pattern + "|" + t.dtype() + "|" + t.shape();
            Group g = groups.computeIfAbsent(key, k -> new Group(pattern.toString(), t.dtype().name(), t.shape().toString()));
            for (int i = 0; i < numbers.size(); i++) {
                if (g.numbers.size() <= i) {
                    g.numbers.add(new TreeSet<>());
                }
                g.numbers.get(i).add(numbers.get(i));
            }
            g.count++;
            g.bytes += t.byteSize();
        }
        return new ArrayList<>(groups.values());
    }
}
