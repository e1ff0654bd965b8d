#!/usr/bin/env python3
"""Checks that Python's safetensors accepts files moeport wrote.

Usage: check_safetensors.py PATH [PATH ...]   (files, or folders of *.safetensors with their index)

For each file: safetensors parses and validates the header (its own Rust code), every tensor's dtype
and shape are listed, and every tensor is read with torch (dtypes torch has no type for are reported
as such). For a folder with model.safetensors.index.json, every tensor of the index must be in the
shard it names. Exit status 1 on any failure.
"""
import glob
import json
import os
import sys

import safetensors
import torch
from safetensors import safe_open


def check_file(path):
    with safe_open(path, framework="pt") as f:
        names = list(f.keys())
        unreadable = {}
        for name in names:
            dtype = f.get_slice(name).get_dtype()
            try:
                f.get_tensor(name)
            except Exception as e:  # e.g. F6 dtypes, which torch lacks
                unreadable[dtype] = str(e).splitlines()[0]
    note = "".join(f"; {d} has no torch type ({why})" for d, why in unreadable.items())
    print(f"OK {path}: {len(names)} tensors{note}")
    return names


def main():
    failed = False
    print(f"safetensors {safetensors.__version__}, torch {torch.__version__}")
    for path in sys.argv[1:]:
        try:
            files = sorted(glob.glob(os.path.join(path, "*.safetensors"))) if os.path.isdir(path) else [path]
            held = {os.path.basename(f): set(check_file(f)) for f in files}
            index = os.path.join(path, "model.safetensors.index.json") if os.path.isdir(path) else None
            if index and os.path.exists(index):
                weight_map = json.load(open(index))["weight_map"]
                missing = [n for n, shard in weight_map.items() if n not in held.get(shard, set())]
                if missing:
                    raise ValueError(f"index names tensors its shards do not hold: {missing[:5]}")
                print(f"OK {index}: {len(weight_map)} entries")
        except Exception as e:  # report every file, then fail
            print(f"FAILED {path}: {e}")
            failed = True
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
