#!/usr/bin/env python3
"""Reads a torch_dist checkpoint with PyTorch's own distributed-checkpoint reader and checks every tensor.

Usage: check_torch_dist.py TORCH_DIST_DIR REFERENCE

TORCH_DIST_DIR is what `moeport import` writes (the tracker folder or its iter_* folder). Every tensor entry is
loaded with torch.distributed.checkpoint (no process group: single-process load into tensors allocated from the
metadata), the common state with torch.load(weights_only=True) as Megatron-Core does. REFERENCE is a folder of
safetensors under Megatron-Core names (`moeport import --ckpt-format safetensors --experts stacked`): each
tensor must equal it, key for key (per-layer or layer-stacked keys, doubled `experts.experts.` names mapped, the
local spec's norm names mapped to the Transformer Engine ones, Mamba's and Gated DeltaNet's split in_proj and conv1d
keys joined in Megatron-Core's section order).
Prints one line per problem and a summary; exit status 1 on any problem.
"""
import glob
import io
import os
import re
import sys

import torch
import torch.distributed.checkpoint as dcp
from safetensors.torch import load_file


def iteration_dir(path):
    tracker = os.path.join(path, "latest_checkpointed_iteration.txt")
    if os.path.exists(tracker):
        it = open(tracker).read().strip()
        return os.path.join(path, "release" if it == "release" else f"iter_{int(it):07d}")
    return path


# Megatron-Core's local layer spec keys some norms by module (gpt_layer_specs.py); the reference uses the
# Transformer Engine names. (A MoE layer's local mlp.linear_fc1.layer_norm_weight is its pre_mlp_layernorm.)
LOCAL_TO_TE = [
    (".self_attention.q_layernorm.weight", ".self_attention.linear_q_up_proj.layer_norm_weight"),
    (".self_attention.kv_layernorm.weight", ".self_attention.linear_kv_up_proj.layer_norm_weight"),
    (".pre_mlp_layernorm.weight", ".mlp.linear_fc1.layer_norm_weight"),
    (".mlp.linear_fc1.layer_norm_weight", ".pre_mlp_layernorm.weight"),
]


def reference_tensor(ref, key, layer_count):
    """The reference tensor of a checkpoint key: a layer-stacked key [L, ...] is each layer's, resolved on its own."""
    stacked = re.match(r"decoder\.layers\.(?!\d+\.)(.*)", key)
    if stacked:
        layers = [reference_tensor(ref, f"decoder.layers.{i}.{stacked.group(1)}", 0) for i in range(layer_count)]
        return None if any(t is None for t in layers) else torch.stack(layers)
    for name in [key] + [key[: -len(a)] + b for a, b in LOCAL_TO_TE if key.endswith(a)]:
        name = name.replace("experts.experts.", "experts.")
        if name in ref:
            return ref[name]
    return None


# Megatron-Core saves these tensors as one key per row section, <name>.<section> (_split_tensor_factory):
# ssm/mamba_mixer.py sharded_state_dict (in_proj z x B C dt; conv1d x B C) and
# ssm/gated_delta_net/gdn.py in_proj_split_names, common.py sharded_state_dict (conv1d query key value).
SECTIONS = {
    "in_proj.weight": [["z", "x", "B", "C", "dt"], ["query", "key", "value", "z", "beta", "alpha"]],
    "conv1d.weight": [["x", "B", "C"], ["query", "key", "value"]],
    "conv1d.bias": [["x", "B", "C"], ["query", "key", "value"]],
}


def join_sections(tensors):
    """The split keys of `tensors` joined back into one tensor each, its sections' rows in Megatron-Core's order."""
    split = {}
    for key in list(tensors):
        m = re.match(r"(.*\.(" + "|".join(re.escape(n) for n in SECTIONS) + r"))\.(\w+)$", key)
        if m:
            split.setdefault((m.group(1), m.group(2)), {})[m.group(3)] = tensors.pop(key)
    problems = []
    for (base, name), parts in split.items():
        order = next((o for o in SECTIONS[name] if set(o) == set(parts)), None)
        if order is None:
            problems.append(f"{base}: sections {sorted(parts)} are not Megatron-Core's")
            continue
        rows = 1 if re.match(r"decoder\.layers\.(?!\d+\.)", base) else 0  # a layer-stacked key: [L, rows, ...]
        tensors[base] = torch.cat([parts[section] for section in order], dim=rows)
    return problems


def main():
    folder, reference = iteration_dir(sys.argv[1]), sys.argv[2]
    reader = dcp.FileSystemReader(folder)
    metadata = reader.read_metadata()
    tensors, objects = {}, {}
    for key, md in metadata.state_dict_metadata.items():
        if isinstance(md, dcp.metadata.TensorStorageMetadata):
            tensors[key] = torch.empty(md.size, dtype=md.properties.dtype)
        else:
            objects[key] = io.BytesIO()
    state_dict = {**tensors, **objects}
    dcp.load(state_dict, storage_reader=reader, no_dist=True)
    problems = 0
    common = state_dict.get("common_state/shard_0_1")
    if common is None:
        print("no common_state/shard_0_1 entry")
        problems += 1
    else:
        # DCP's planner unpickles bytes entries itself; Megatron-Core reads its common state as torch.save data
        if isinstance(common, io.BytesIO):
            common.seek(0)
            common = torch.load(common, weights_only=True)
        print(f"common state: {common[0]}")
    ref = {}
    for f in sorted(glob.glob(os.path.join(reference, "*.safetensors"))):
        ref.update(load_file(f))
    layers = 1 + max((int(m.group(1)) for k in ref for m in [re.match(r"decoder\.layers\.(\d+)\.", k)] if m), default=-1)
    split_problems = join_sections(tensors)
    for p in split_problems:
        print(p)
    problems += len(split_problems)
    for key, t in tensors.items():
        expected = reference_tensor(ref, key, layers)
        if expected is None:
            print(f"{key}: not in the reference")
            problems += 1
        elif expected.dtype != t.dtype and key.endswith("expert_bias") and torch.equal(expected.float(), t.float()):
            pass  # Megatron keeps the expert bias in f32; the safetensors import keeps the same values
        elif expected.dtype != t.dtype or expected.shape != t.shape or not torch.equal(expected, t):
            print(f"{key}: differs ({t.dtype}{tuple(t.shape)} vs reference {expected.dtype}{tuple(expected.shape)})")
            problems += 1
    print(f"RESULT {len(tensors)} tensors and {len(objects)} bytes entries read by torch.distributed.checkpoint; {problems} problem(s)")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
