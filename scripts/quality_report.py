#!/usr/bin/env python3
"""How close quantized checkpoints compute to their BF16 source, in transformers.

Usage: quality_report.py [--device cpu|cuda] [--json] LOGITS.safetensors BF16_DIR LABEL=QUANTIZED_DIR [...]

LOGITS.safetensors is a fixture's file (its `input_ids` are used). BF16_DIR and every QUANTIZED_DIR are loaded with
AutoModelForCausalLM (each in the dtype and quantization its config.json declares) and run on those input_ids.
For each quantized folder it reports, against the BF16 folder's logits: max |delta| of the logits, argmax agreement
(the share of positions whose top token is the same), and the mean KL divergence KL(p_bf16 || p_quantized) of the
next-token distributions. A folder transformers cannot load is reported with the reason. Exit status 1 if any
folder failed to load.

Example (on a machine with torch and transformers; moeport's release archive brings its own Java):
  moeport quantize --format fp8_pb --flavor transformers --in fixtures/qwen3_moe/hf --out /tmp/q-fp8pb
  quality_report.py fixtures/qwen3_moe/logits.safetensors fixtures/qwen3_moe/hf fp8_pb/transformers=/tmp/q-fp8pb
"""
import argparse
import json
import sys

import torch
import transformers
from safetensors.torch import load_file


def logits_of(folder, ids, device):
    model = transformers.AutoModelForCausalLM.from_pretrained(folder).to(device).eval()
    with torch.no_grad():
        return model(ids.to(device)).logits.float().cpu()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", action="store_true")
    p.add_argument("logits")
    p.add_argument("bf16")
    p.add_argument("quantized", nargs="+", metavar="LABEL=DIR")
    args = p.parse_args()
    ids = load_file(args.logits)["input_ids"]
    reference = logits_of(args.bf16, ids, args.device)
    ref_logp = torch.log_softmax(reference, dim=-1)
    rows, failed = [], False
    for item in args.quantized:
        label, _, folder = item.partition("=")
        try:
            logits = logits_of(folder, ids, args.device)
        except Exception as e:  # a folder transformers refuses is a result, not a crash of the report
            rows.append({"label": label, "folder": folder, "error": f"{type(e).__name__}: {e}"[:300]})
            failed = True
            continue
        logp = torch.log_softmax(logits, dim=-1)
        kl = (ref_logp.exp() * (ref_logp - logp)).sum(-1).mean().item()
        rows.append({
            "label": label,
            "folder": folder,
            "max_abs_delta": (logits - reference).abs().max().item(),
            "argmax_agreement": (logits.argmax(-1) == reference.argmax(-1)).float().mean().item(),
            "kl_divergence": kl,
        })
    if args.json:
        print(json.dumps({"reference": args.bf16, "device": args.device, "results": rows}, indent=2))
    else:
        print(f"reference {args.bf16} on {args.device}, input_ids {tuple(ids.shape)}")
        print(f"{'format/flavor':28s} {'max |delta|':>12s} {'argmax agree':>13s} {'KL':>10s}")
        for r in rows:
            if "error" in r:
                print(f"{r['label']:28s} cannot load: {r['error']}")
            else:
                print(f"{r['label']:28s} {r['max_abs_delta']:12.4g} {r['argmax_agreement']:13.4f} {r['kl_divergence']:10.3g}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
