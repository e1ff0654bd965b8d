#!/usr/bin/env python3
"""The anchor: Model Optimizer's own NVFP4 quantizer on the same weights moeport quantized, timed as its
users run it (load_file -> quantize -> save_file, shard by shard), on the GPU and on the CPU, and its bytes
compared with moeport's output tensor by tensor.

Usage: modelopt_nvfp4.py MODELOPT_SRC BF16_DIR MOEPORT_NVFP4_DIR WORK_DIR [--device cuda|cpu] [--threads N]

MODELOPT_SRC is a checkout of NVIDIA/Model-Optimizer (only `modelopt/torch/quantization/{qtensor,utils,backends}`
is read). Only its qtensor classes and the utilities they call are imported: the package __init__ files,
which pull in the whole toolkit (pydantic configs, plugins), are skipped, and the two helpers of
`modelopt.torch.utils` that core_utils imports but NVFP4 never calls are stubbed.

What Model Optimizer's export does per weight (modelopt/torch/export/quant_utils.py, to_quantized_weight and
get_weight_scaling_factor for NVFP4): weight_scale_2 = amax / (6 * 448), shared (max) across the layers a
serving engine fuses (q/k/v, gate/up: preprocess_linear_fusion), then NVFP4QTensor.get_weights_scaling_factor
and NVFP4QTensor.quantize with those scales.
"""
import argparse, glob, importlib.util, os, re, sys, time, types

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file


def load_modelopt(src):
    root = os.path.join(src, "modelopt", "torch", "quantization")

    def package(name, path):
        m = types.ModuleType(name)
        m.__path__ = [path]
        sys.modules[name] = m
        return m

    def module(name, path):
        spec = importlib.util.spec_from_file_location(name, path)
        m = importlib.util.module_from_spec(spec)
        sys.modules[name] = m
        spec.loader.exec_module(m)
        return m

    package("modelopt", os.path.join(src, "modelopt"))
    package("modelopt.torch", os.path.join(src, "modelopt", "torch"))
    package("modelopt.torch.quantization", root)
    config = types.ModuleType("modelopt.torch.quantization.config")
    config.QuantizerCfgEntry = dict
    sys.modules[config.__name__] = config
    tutils = package("modelopt.torch.utils", os.path.join(src, "modelopt", "torch", "utils"))
    tutils.get_unwrapped_name = lambda *a, **k: None
    tutils.print_rank_0 = print
    network = types.ModuleType("modelopt.torch.utils.network")
    network.temporarily_remove_accelerate_hook = None
    sys.modules[network.__name__] = network
    utils = package("modelopt.torch.quantization.utils", os.path.join(root, "utils"))
    for sub in ("numeric_utils", "core_utils"):
        m = module(f"modelopt.torch.quantization.utils.{sub}", os.path.join(root, "utils", sub + ".py"))
        for k, v in vars(m).items():
            if not k.startswith("__"):
                setattr(utils, k, v)
    package("modelopt.torch.quantization.backends", os.path.join(root, "backends"))
    module("modelopt.torch.quantization.backends.utils", os.path.join(root, "backends", "utils.py"))
    package("modelopt.torch.quantization.qtensor", os.path.join(root, "qtensor"))
    module("modelopt.torch.quantization.qtensor.base_qtensor", os.path.join(root, "qtensor", "base_qtensor.py"))
    return module("modelopt.torch.quantization.qtensor.nvfp4_tensor", os.path.join(root, "qtensor", "nvfp4_tensor.py")).NVFP4QTensor


def fused_group(name):
    """The layer a serving engine fuses this weight into: q/k/v and gate/up share weight_scale_2."""
    return re.sub(r"\.(q_proj|k_proj|v_proj)\.weight$", ".qkv", re.sub(r"\.(gate_proj|up_proj)\.weight$", ".gate_up", name))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("modelopt_src"); ap.add_argument("bf16_dir"); ap.add_argument("moeport_dir"); ap.add_argument("work")
    ap.add_argument("--device", default="cuda"); ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    NVFP4QTensor = load_modelopt(a.modelopt_src)
    quantized = set()
    for shard in glob.glob(os.path.join(a.moeport_dir, "*.safetensors")):
        with safe_open(shard, "pt") as f:
            quantized |= {n[: -len("_scale")] for n in f.keys() if n.endswith(".weight_scale")}
    os.makedirs(a.work, exist_ok=True)
    shards = sorted(glob.glob(os.path.join(a.bf16_dir, "*.safetensors")))
    dev = torch.device(a.device)

    # weight_scale_2 of a fused group needs every member's amax first: one pass over the weights for it,
    # as Model Optimizer's calibration does before export.
    t0 = time.perf_counter()
    group_amax = {}
    for shard in shards:
        for name, w in load_file(shard).items():
            if name in quantized:
                amax = w.to(dev).abs().amax().float()
                g = fused_group(name)
                group_amax[g] = torch.maximum(group_amax[g], amax) if g in group_amax else amax
    written = 0
    for shard in shards:
        out = {}
        for name, w in load_file(shard).items():
            if name not in quantized:
                out[name] = w
                continue
            w = w.to(dev)
            s2 = group_amax[fused_group(name)] / (6.0 * 448.0)
            scale, _ = NVFP4QTensor.get_weights_scaling_factor(w, 16, s2)
            q, _, _ = NVFP4QTensor.quantize(w, 16, scale, s2)
            out[name] = q._quantized_data.cpu()
            out[name + "_scale"] = scale.cpu()
            out[name + "_scale_2"] = s2.cpu()
        path = os.path.join(a.work, os.path.basename(shard))
        save_file(out, path)
        written += os.path.getsize(path)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    read = sum(os.path.getsize(s) for s in shards)

    same = differ = 0
    ours = {}
    for shard in glob.glob(os.path.join(a.moeport_dir, "*.safetensors")):
        ours.update(load_file(shard))
    for shard in glob.glob(os.path.join(a.work, "*.safetensors")):
        for name, t in load_file(shard).items():
            if name in quantized or name[: -len("_scale")] in quantized or name[: -len("_scale_2")] in quantized:
                m = ours.get(name)
                if m is not None and m.numel() == t.numel() and torch.equal(m.reshape(-1).view(torch.uint8), t.reshape(-1).contiguous().view(torch.uint8)):
                    same += 1
                else:
                    differ += 1
                    if differ <= 5:
                        print(f"  differs: {name} ours {None if m is None else (m.dtype, tuple(m.shape))} modelopt {(t.dtype, tuple(t.shape))}")
    peak = torch.cuda.max_memory_allocated() / 1e9 if dev.type == "cuda" else 0
    print(f"modelopt nvfp4 on {a.device}{' x' + str(torch.get_num_threads()) + ' threads' if dev.type == 'cpu' else ''}: "
          f"{seconds:.2f} s, {read / seconds / 1e9:.2f} GB/s of input, {len(quantized)} weights; "
          f"bytes equal to moeport's: {same} tensors, different: {differ}" + (f"; GPU memory peak {peak:.1f} GB" if peak else ""))


if __name__ == "__main__":
    main()
