#!/usr/bin/env python3
"""How close quantized checkpoints compute to their BF16 source, in transformers.

Usage:
  quality_report.py [--device cpu|cuda] [--native] [--json] LOGITS.safetensors BF16_DIR LABEL=QUANTIZED_DIR [...]
  quality_report.py [--device cpu|cuda] [--native] [--json] --exports EXPORTS_DIR --fixtures FIXTURES_DIR

LOGITS.safetensors is a fixture's file (its `input_ids` are used). BF16_DIR and every QUANTIZED_DIR are loaded with
AutoModelForCausalLM (each in the dtype and quantization its config.json declares) and run on those input_ids.
For each quantized folder it reports, against the BF16 folder's logits: max |delta| of the logits, argmax agreement
(the share of positions whose top token is the same), and the mean KL divergence KL(p_bf16 || p_quantized) of the
next-token distributions; and the flip margin, the largest gap between BF16's top two logits at a position whose top
token changed (a top token can change only where that gap is below twice the logits' error). A folder transformers cannot load is reported with the reason. The BF16 folder's logits
are also compared with the fixture's stored ones (max |delta|), to show the reference itself loaded right.

With --exports, EXPORTS_DIR/<arch>/<format>.<flavor>/ (as scripts/quality_report.sh makes them) are compared with
FIXTURES_DIR/<arch>/hf on FIXTURES_DIR/<arch>/logits.safetensors, every architecture in turn.

transformers' fp8, mxfp8 and mxfp4 methods compute with kernels it downloads from the Hugging Face Hub
(kernels-community/finegrained-fp8, gpt-oss-triton-kernels), which a machine without internet cannot fetch; so by
default these checkpoints are loaded with `dequantize: true` (transformers' own dequantization at load time, then
BF16 matmuls: the weights' quantization error alone). --native leaves transformers to choose.

Exit status 1 if any folder failed to load.
"""
import argparse
import json
import os
import sys

import torch
import transformers
from safetensors.torch import load_file

# The quantization methods whose transformers quantizer takes `dequantize` (utils/quantization_config.py).
DEQUANTIZABLE = {"fp8", "mxfp8", "mxfp4"}


def load(folder, device, native):
    config = transformers.AutoConfig.from_pretrained(folder)
    q = getattr(config, "quantization_config", None)
    if not native and isinstance(q, dict) and q.get("quant_method") in DEQUANTIZABLE:
        q["dequantize"] = True
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, config=config)
    return model.to(device).eval()


def logits_of(folder, ids, device, native):
    model = load(folder, device, native)
    with torch.no_grad():
        logits = model(ids.to(device)).logits.float().cpu()
    del model
    if device == "cuda":
        torch.cuda.empty_cache()
    return logits


def compare(logits_file, bf16, quantized, device, native):
    """quantized: [(label, folder)]. Returns the report of one reference folder."""
    stored = load_file(logits_file)
    ids = stored["input_ids"]
    reference = logits_of(bf16, ids, device, native)
    ref_logp = torch.log_softmax(reference, dim=-1)
    top2 = reference.topk(2, dim=-1).values
    margin = top2[..., 0] - top2[..., 1]
    rows = []
    for label, folder in quantized:
        try:
            logits = logits_of(folder, ids, device, native)
        except Exception as e:  # a folder transformers refuses is a result, not a crash of the report
            rows.append({"label": label, "folder": folder, "error": f"{type(e).__name__}: {e}"[:300]})
            continue
        logp = torch.log_softmax(logits, dim=-1)
        flipped = logits.argmax(-1) != reference.argmax(-1)
        rows.append({
            "label": label,
            "folder": folder,
            "max_abs_delta": (logits - reference).abs().max().item(),
            "argmax_agreement": 1 - flipped.float().mean().item(),
            "kl_divergence": (ref_logp.exp() * (ref_logp - logp)).sum(-1).mean().item(),
            # A top token can change only where BF16's top two are closer than twice the logits' error: near-ties.
            "flip_margin": margin[flipped].max().item() if flipped.any() else 0.0,
        })
    return {
        "reference": bf16,
        "input_ids": list(ids.shape),
        "reference_vs_stored_max_abs_delta": (reference - stored["logits"].float()).abs().max().item() if "logits" in stored else None,
        "results": rows,
    }


def print_report(name, report):
    stored = report["reference_vs_stored_max_abs_delta"]
    print(f"{name}: reference {report['reference']}, input_ids {tuple(report['input_ids'])}"
          + ("" if stored is None else f", its logits vs the fixture's stored logits: max |delta| {stored:.3g}"))
    print(f"  {'format.flavor':26s} {'max |delta|':>12s} {'argmax agree':>13s} {'KL':>10s} {'flip margin':>12s}")
    for r in report["results"]:
        if "error" in r:
            print(f"  {r['label']:26s} cannot load: {r['error']}")
        else:
            print(f"  {r['label']:26s} {r['max_abs_delta']:12.4g} {r['argmax_agreement']:13.4f} {r['kl_divergence']:10.3g} {r['flip_margin']:12.3g}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--native", action="store_true", help="do not ask transformers to dequantize fp8/mxfp8/mxfp4 at load time")
    p.add_argument("--json", action="store_true")
    p.add_argument("--exports", help="folder of <arch>/<format>.<flavor>/ exports (scripts/quality_report.sh)")
    p.add_argument("--fixtures", help="folder of <arch>/{hf,logits.safetensors} fixtures (with --exports)")
    p.add_argument("args", nargs="*", metavar="LOGITS BF16_DIR LABEL=DIR")
    args = p.parse_args()
    reports = {}
    if args.exports:
        if not args.fixtures or args.args:
            p.error("--exports takes --fixtures and no positional arguments")
        for arch in sorted(os.listdir(args.exports)):
            arch_dir = os.path.join(args.exports, arch)
            labels = sorted(d for d in os.listdir(arch_dir) if os.path.isdir(os.path.join(arch_dir, d)))
            fixture = os.path.join(args.fixtures, arch)
            reports[arch] = compare(os.path.join(fixture, "logits.safetensors"), os.path.join(fixture, "hf"),
                                    [(label, os.path.join(arch_dir, label)) for label in labels], args.device, args.native)
    else:
        if len(args.args) < 3:
            p.error("give LOGITS BF16_DIR LABEL=DIR [...], or --exports and --fixtures")
        quantized = [tuple(item.split("=", 1)) for item in args.args[2:]]
        reports[args.args[1]] = compare(args.args[0], args.args[1], quantized, args.device, args.native)
    if args.json:
        print(json.dumps({"device": args.device, "native": args.native, "transformers": transformers.__version__,
                          "torch": torch.__version__, "reports": reports}, indent=2))
    else:
        print(f"transformers {transformers.__version__}, torch {torch.__version__}, on {args.device}"
              + (", native quantized kernels" if args.native else ", fp8/mxfp8/mxfp4 dequantized at load (dequantize: true)"))
        for name, report in reports.items():
            print_report(name, report)
    failed = any("error" in r for report in reports.values() for r in report["results"])
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
