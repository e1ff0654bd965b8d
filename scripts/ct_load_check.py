#!/usr/bin/env python3
"""Reads moeport's compressed-tensors outputs with compressed-tensors' own code.

Usage: ct_load_check.py [--json] CT_DIR=DEQUANTIZED_DIR [...]

CT_DIR is a `moeport quantize|export --flavor compressed-tensors` output; DEQUANTIZED_DIR is `moeport dequantize --in
CT_DIR --out DEQUANTIZED_DIR` (BF16). For each CT_DIR:
  1. its config.json `quantization_config` is validated by compressed-tensors' pydantic models (QuantizationConfig,
     whose QuantizationArgs and QuantizationScheme forbid unknown fields) and dumped back: the dump must equal what
     moeport wrote (less `version`, `sparsity_config`, `transform_config`, which ModelCompressor adds when saving);
  2. every quantized module is decompressed by the compressor its config group's `format` names (compressed-tensors'
     registry: float-quantized, nvfp4-pack-quantized, mxfp4-pack-quantized) and compared, in f32, with moeport's
     dequantized weight: max |delta| and the share of elements that are equal.
compressed-tensors needs pydantic (and loguru); when it cannot be imported this script says so and exits 0.
Exit status 1 if a config does not validate or round-trip, or a module fails to decompress or differs by more than
one BF16 rounding step of its magnitude (2^-8 relative).

Example (moeport on a machine with Java; the check where torch and compressed-tensors are):
  for f in fp8 fp8_pc fp8_pb nvfp4 mxfp4; do
    moeport quantize --format $f --flavor compressed-tensors --in fixtures/qwen3_moe/hf --out /tmp/ct-$f
    moeport dequantize --in /tmp/ct-$f --out /tmp/ct-$f-bf16
  done
  ct_load_check.py /tmp/ct-fp8=/tmp/ct-fp8-bf16 /tmp/ct-fp8_pc=/tmp/ct-fp8_pc-bf16 ...
"""
import argparse
import json
import os
import sys

try:
    import torch
    from safetensors import safe_open
    from compressed_tensors.compressors import BaseCompressor
    from compressed_tensors.quantization import QuantizationConfig
except Exception as e:  # absent or unimportable (pydantic missing): nothing to check here
    print(f"ct_load_check: compressed-tensors cannot be imported here ({type(e).__name__}: {e}); nothing checked")
    sys.exit(0)

ADDED_ON_SAVE = ("version", "sparsity_config", "transform_config")


def tensors(folder):
    out = {}
    for name in sorted(os.listdir(folder)):
        if name.endswith(".safetensors"):
            with safe_open(os.path.join(folder, name), "pt") as f:
                for key in f.keys():
                    out[key] = f.get_tensor(key)
    return out


def check(ct_dir, dq_dir):
    problems = []
    with open(os.path.join(ct_dir, "config.json")) as f:
        written = json.load(f)["quantization_config"]
    config = QuantizationConfig.model_validate(written)
    dumped = json.loads(json.dumps(config.model_dump(), default=str))
    expected = {k: v for k, v in written.items() if k not in ADDED_ON_SAVE}
    if dumped != expected:
        problems.append(f"config does not round-trip: pydantic dumps {json.dumps(dumped, sort_keys=True)}")
    weights = tensors(ct_dir)
    decoded = tensors(dq_dir)
    schemes = list(config.config_groups.values())
    modules = sorted({k.rsplit(".", 1)[0] for k in weights if k.endswith(".weight_scale")})
    compared = 0
    worst = 0.0
    for module in modules:
        local = {k[len(module) + 1:]: v for k, v in weights.items() if k.startswith(module + ".") and "." not in k[len(module) + 1:]}
        scheme = next((s for s in schemes if module in s.targets), schemes[0]) if len(schemes) > 1 else schemes[0]
        try:
            compressor = BaseCompressor.get_value_from_registry(scheme.format)
            out = compressor.decompress(local, scheme)["weight"].float()
        except Exception as e:
            problems.append(f"{module}: {scheme.format} decompressor failed: {type(e).__name__}: {e}"[:300])
            continue
        ref = decoded[module + ".weight"].float()
        if out.shape != ref.shape:
            problems.append(f"{module}: decompressed shape {tuple(out.shape)}, moeport's {tuple(ref.shape)}")
            continue
        delta = (out - ref).abs()
        finite = torch.isfinite(ref) & torch.isfinite(out)
        limit = ref.abs() * 2.0 ** -8
        if bool(((delta > limit) & finite).any()) or not torch.equal(torch.isfinite(ref), torch.isfinite(out)):
            problems.append(f"{module}: max |delta| {delta[finite].max().item():.3g} against moeport's dequantized weight")
        worst = max(worst, delta[finite].max().item() if finite.any() else 0.0)
        compared += 1
    return {"folder": ct_dir, "format": config.format, "modules": compared, "max_abs_delta": worst, "problems": problems}


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--json", action="store_true")
    p.add_argument("pairs", nargs="+", metavar="CT_DIR=DEQUANTIZED_DIR")
    args = p.parse_args()
    rows = []
    for pair in args.pairs:
        ct_dir, _, dq_dir = pair.partition("=")
        try:
            rows.append(check(ct_dir, dq_dir))
        except Exception as e:  # a config compressed-tensors refuses is a result
            rows.append({"folder": ct_dir, "problems": [f"{type(e).__name__}: {e}"[:500]]})
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for r in rows:
            status = "ok" if not r["problems"] else f"{len(r['problems'])} problem(s)"
            print(f"{r['folder']}: {r.get('format', '?')}, {r.get('modules', 0)} module(s) decompressed, "
                  f"max |delta| {r.get('max_abs_delta', float('nan')):.3g}: {status}")
            for problem in r["problems"]:
                print("  " + problem)
    sys.exit(1 if any(r["problems"] for r in rows) else 0)


if __name__ == "__main__":
    main()
