#!/usr/bin/env python3
"""Loads Hugging Face folders with transformers and compares their logits with a reference.

Usage: check_logits.py [--device cpu|cuda] LOGITS.safetensors FOLDER [FOLDER ...]

LOGITS.safetensors holds `input_ids` and the `logits` transformers computed from the original model
(the fixtures' logits.safetensors). Each FOLDER (an export of moeport) is loaded with
AutoModelForCausalLM in the dtype of its config, run on the same input_ids, and reported as EXACT
(every logit bit-identical), or with its largest absolute difference. Exit status 1 if any differs.
"""
import sys

import torch
import transformers
from safetensors.torch import load_file


def main():
    args = sys.argv[1:]
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args[0] == "--device":
        device, args = args[1], args[2:]
    reference = load_file(args[0])
    ids, expected = reference["input_ids"], reference["logits"]
    failed = False
    for folder in args[1:]:
        model = transformers.AutoModelForCausalLM.from_pretrained(folder).to(device).eval()
        with torch.no_grad():
            logits = model(ids.to(device)).logits.float().cpu()
        if logits.shape == expected.shape and torch.equal(logits, expected):
            print(f"EXACT {folder} ({tuple(logits.shape)}, torch {torch.__version__}, transformers {transformers.__version__}, {device})")
        else:
            diff = (logits - expected).abs().max().item() if logits.shape == expected.shape else float("nan")
            print(f"DIFFERENT {folder}: max |delta| = {diff} (shape {tuple(logits.shape)} vs {tuple(expected.shape)})")
            failed = True
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
