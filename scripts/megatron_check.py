#!/usr/bin/env python3
"""Loads Megatron-Core weights into Megatron-Core's own model and compares its forward pass with transformers.

Run under `python3 -m torch.distributed.run --nproc-per-node N` with PYTHONPATH holding Megatron-LM's
`megatron/` package (pure Python: megatron/core; no Transformer Engine, the local layer spec, gloo on CPU;
a CUDA or a CPU-only PyTorch).

    megatron_check.py --hf HF_DIR --logits LOGITS.safetensors
                      (--load TORCH_DIST_DIR | --state-dict MCORE_SAFETENSORS_DIR)
                      [--tp 2] [--ep 2] [--save DIR] [--save-dtype bf16|fp32]

    e.g. python3 -m torch.distributed.run --nproc-per-node 4 scripts/megatron_check.py \
           --hf ../shared/fixtures/qwen3_next/hf --logits ../shared/fixtures/qwen3_next/logits.safetensors \
           --load <moeport import --megatron-spec local> --tp 2 --ep 2

--load reads a torch_dist checkpoint (a tracker folder or an iter_* folder) with `dist_checkpointing.load`,
resharded to the model's TP/EP layout, strictly: the model's keys (the linears' _extra_state included) and
the checkpoint's must be the same. --state-dict reads a plain Megatron-name safetensors folder (TP1/EP1 only,
SequentialMLP experts, Transformer Engine norm names mapped to the local spec's modules). The model is built
from HF_DIR's config.json in fp32: a GPTModel with the local spec, for Qwen3-Next and Qwen3.5 MoE with
Megatron-Core's GatedDeltaNet (local linears, torch paths), for NemotronH a HybridModel with Megatron-Core's
local hybrid spec. Where a third-party kernel is missing, a stand-in computes the same formula, and nothing
else: flash-linear-attention's l2norm (Gated DeltaNet); mamba_ssm's chunked scan and gated RMSNorm (Mamba);
Transformer Engine's RMSNorm (zero-centered for Qwen3-Next; Megatron's WrappedTorchNorm in the hybrid spec).
Its logits on the input_ids of LOGITS.safetensors are compared with transformers' fp32 logits of HF_DIR:
max |delta| and argmax agreement. --save writes what the loaded model holds with `dist_checkpointing.save`
(in --save-dtype; the router's expert_bias stays fp32, as Megatron keeps it). Exit status 1 when
max |delta| > --tolerance (1e-4), or when a key is missing or left over.
"""
import argparse
import contextlib
import copy
import glob
import json
import os
import sys

import torch
import torch.nn.functional as F


def parse_args():
    p = argparse.ArgumentParser()
    p.add_argument("--hf", required=True)
    p.add_argument("--logits", required=True)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--load")
    src.add_argument("--state-dict")
    p.add_argument("--tp", type=int, default=1)
    p.add_argument("--ep", type=int, default=1)
    p.add_argument("--save")
    p.add_argument("--save-dtype", choices=["bf16", "fp32"], default="bf16")
    p.add_argument("--tolerance", type=float, default=1e-4)
    return p.parse_args()


def transformer_config(hf, args):
    """Megatron-Core's TransformerConfig for an HF config (the values Megatron-Bridge's bridges set)."""
    from megatron.core.transformer.transformer_config import MLATransformerConfig, TransformerConfig

    arch = hf["model_type"]
    layers = hf.get("num_hidden_layers") or len(hf["layers_block_type"])  # NemotronH: one per block
    common = dict(
        num_layers=layers,
        hidden_size=hf["hidden_size"],
        num_attention_heads=hf["num_attention_heads"],
        num_query_groups=hf.get("num_key_value_heads") or hf["num_attention_heads"],
        ffn_hidden_size=hf.get("intermediate_size") or hf["moe_intermediate_size"],  # Qwen3.5 MoE: no dense layer
        normalization="RMSNorm",
        layernorm_epsilon=hf.get("rms_norm_eps") or hf["layer_norm_epsilon"],
        gated_linear_unit=True,
        activation_func=F.silu,
        add_bias_linear=False,
        add_qkv_bias=bool(hf.get("attention_bias", False)),
        hidden_dropout=0.0,
        attention_dropout=0.0,
        bias_activation_fusion=False,
        masked_softmax_fusion=False,
        persist_layer_norm=False,
        bias_dropout_fusion=False,
        apply_rope_fusion=False,
        gradient_accumulation_fusion=False,
        use_cpu_initialization=True,
        params_dtype=torch.float32,
        pipeline_dtype=torch.float32,
        tensor_model_parallel_size=args.tp,
        expert_model_parallel_size=args.ep,
        expert_tensor_parallel_size=1,
        sequence_parallel=False,  # the local spec's torch norms refuse it; Megatron does not need it for TP+EP
        num_moe_experts=hf.get("num_local_experts") or hf.get("num_experts") or hf.get("n_routed_experts"),
        moe_ffn_hidden_size=hf.get("moe_intermediate_size") or hf["intermediate_size"],
        moe_router_topk=hf["num_experts_per_tok"],
        moe_grouped_gemm=False,
        moe_token_dispatcher_type="alltoall",
        moe_router_load_balancing_type="none",
        moe_aux_loss_coeff=0.0,
        moe_router_dtype="fp32",
    )
    if hf.get("head_dim"):
        common["kv_channels"] = hf["head_dim"]
    if arch == "qwen3_moe":
        sparse = [0 if (i in hf.get("mlp_only_layers", []) or (i + 1) % hf.get("decoder_sparse_step", 1))
                  else 1 for i in range(layers)]
        return TransformerConfig(**common, qk_layernorm=True, moe_layer_freq=sparse,
                                 moe_router_pre_softmax=not hf.get("norm_topk_prob", False))
    if arch == "mixtral":
        return TransformerConfig(**common)
    if arch == "deepseek_v3":
        dense = hf.get("first_k_dense_replace", 0)
        common.pop("kv_channels", None)
        return MLATransformerConfig(
            **common,
            moe_layer_freq=[0] * dense + [1] * (layers - dense),
            qk_layernorm=True,
            q_lora_rank=hf["q_lora_rank"],
            kv_lora_rank=hf["kv_lora_rank"],
            qk_head_dim=hf["qk_nope_head_dim"],
            qk_pos_emb_head_dim=hf["qk_rope_head_dim"],
            v_head_dim=hf["v_head_dim"],
            rope_type="rope",
            rotary_base=hf["rope_parameters"]["rope_theta"],
            moe_shared_expert_intermediate_size=hf["moe_intermediate_size"] * hf.get("n_shared_experts", 1),
            moe_router_score_function="sigmoid",
            moe_router_enable_expert_bias=True,
            moe_router_topk_scaling_factor=hf.get("routed_scaling_factor"),
            moe_router_num_groups=hf.get("n_group"),
            moe_router_group_topk=hf.get("topk_group"),
        )
    if arch in ("olmoe", "minimax_m2"):
        # q/k norms over all heads (Megatron-Bridge's OLMoESelfAttention / FullDimQNorm): build_model swaps them in.
        common["moe_ffn_hidden_size"] = hf["intermediate_size"]
        if arch == "olmoe":  # softmax over all experts, then the top k, not renormalized (norm_topk_prob false)
            return TransformerConfig(**common, qk_layernorm=True, moe_router_pre_softmax=not hf.get("norm_topk_prob", False))
        # MiniMax-M2: sigmoid scores, chosen with the expert bias, the chosen ones renormalized (minimax_m2_bridge.py)
        return TransformerConfig(**common, qk_layernorm=True, moe_router_score_function="sigmoid",
                                 moe_router_enable_expert_bias=True, moe_router_bias_update_rate=0.0)
    if arch == "glm4_moe":
        dense = hf.get("first_k_dense_replace", 0)
        return TransformerConfig(
            **common,
            moe_layer_freq=[0] * dense + [1] * (layers - dense),
            qk_layernorm=bool(hf.get("use_qk_norm", False)),
            moe_shared_expert_intermediate_size=hf["moe_intermediate_size"] * hf.get("n_shared_experts", 1),
            moe_router_score_function="sigmoid",
            moe_router_enable_expert_bias=True,
            moe_router_bias_update_rate=0.0,
            moe_router_topk_scaling_factor=hf.get("routed_scaling_factor"),
            moe_router_num_groups=hf.get("n_group"),
            moe_router_group_topk=hf.get("topk_group"),
        )
    if arch == "llama4_text":
        moe = set(hf.get("moe_layers") or range(hf.get("interleave_moe_layer_step", 1) - 1, layers,
                                                 hf.get("interleave_moe_layer_step", 1)))
        nope = [0 if use_rope else 1 for use_rope in hf.get("no_rope_layers") or [1] * layers]
        common["ffn_hidden_size"] = hf.get("intermediate_size_mlp", hf["intermediate_size"])
        common["moe_ffn_hidden_size"] = hf["intermediate_size"]
        return TransformerConfig(
            **common,
            # All MoE: 1, not a list, so that Megatron-Core keys the layers stacked, as moeport writes a homogeneous model.
            moe_layer_freq=1 if len(moe) == layers else [1 if i in moe else 0 for i in range(layers)],
            moe_shared_expert_intermediate_size=hf["intermediate_size"],
            # top-1 sigmoid score applied to the expert's input (Llama4TextMoe); L2 q/k norms without weights;
            # rotary on interleaved pairs (transformers' complex rotation).
            moe_router_score_function="sigmoid",
            moe_apply_probs_on_input=True,
            qk_l2_norm=bool(hf.get("use_qk_norm", False)),
            rotary_interleaved=True,
            no_rope_freq=nope if any(nope) else None,
        )
    if arch in ("qwen3_next", "qwen3_5_moe_text"):
        # Megatron-Bridge qwen/qwen3_next_bridge.py and qwen/qwen35_bridge.py (provider_bridge): Gated DeltaNet layers
        # where layer_types says linear_attention, gated attention, zero-centered norms, a shared expert with its
        # sigmoid gate, per-layer checkpoint keys.
        sparse = [0 if (i in hf.get("mlp_only_layers", []) or (i + 1) % hf.get("decoder_sparse_step", 1))
                  else 1 for i in range(layers)]
        return TransformerConfig(
            **common,
            qk_layernorm=True,
            moe_layer_freq=1 if all(sparse) else sparse,
            moe_router_pre_softmax=False,
            moe_shared_expert_intermediate_size=hf["shared_expert_intermediate_size"],
            moe_shared_expert_gate=True,
            layernorm_zero_centered_gamma=True,
            attention_output_gate=True,
            experimental_attention_variant="gated_delta_net",
            linear_attention_freq=[1 if t == "linear_attention" else 0 for t in hf["layer_types"]],
            linear_conv_kernel_dim=hf["linear_conv_kernel_dim"],
            linear_key_head_dim=hf["linear_key_head_dim"],
            linear_value_head_dim=hf["linear_value_head_dim"],
            linear_num_key_heads=hf["linear_num_key_heads"],
            linear_num_value_heads=hf["linear_num_value_heads"],
            hetereogenous_dist_checkpoint=True,
            # GDN's torch-native conv1d and Megatron's own torch_chunk_gated_delta_rule (gdn.py), not FLA's kernels
            deterministic_mode=True,
        )
    if arch == "nemotron_h":
        # Megatron-Bridge nemotronh/nemotron_h_bridge.py (provider_bridge, CONFIG_MAPPING): a hybrid model of Mamba,
        # attention without position embedding, squared-ReLU MLPs and MoE with a sigmoid router and expert bias.
        from megatron.core.activations import squared_relu
        common.update(gated_linear_unit=False, activation_func=squared_relu,
                      moe_ffn_hidden_size=hf["moe_intermediate_size"])
        return TransformerConfig(
            **common,
            is_hybrid_model=True,
            mamba_num_heads=hf["mamba_num_heads"],
            mamba_head_dim=hf["mamba_head_dim"],
            mamba_num_groups=hf["n_groups"],
            mamba_state_dim=hf["ssm_state_size"],
            use_mamba_mem_eff_path=False,  # the unfused path: torch's conv1d, then the scan (see with_torch_mamba_ssm)
            moe_shared_expert_intermediate_size=hf["moe_shared_expert_intermediate_size"],
            moe_router_score_function="sigmoid",
            moe_router_enable_expert_bias=True,
            moe_router_bias_update_rate=0.0,
            moe_router_topk_scaling_factor=hf.get("routed_scaling_factor"),
        )
    if arch == "ernie4_5_moe":
        raise SystemExit("megatron_check: ERNIE 4.5 picks experts by softmax score plus the expert bias (transformers' "
                         "Ernie4_5_MoeTopKRouter); Megatron-Core's expert bias needs sigmoid or sqrtsoftplus scores "
                         "(transformer_config.py), so its forward pass cannot match")
    raise SystemExit(f"megatron_check: no Megatron-Core config for model_type {arch!r}")


class FullWidthRMSNorm(torch.nn.Module):
    """RMSNorm over all heads of a projection ([sq, b, heads, head_dim] normalized over heads x head_dim), as
    OLMoE's and MiniMax-M2's q/k norms (Megatron-Bridge: OLMoESelfAttention, FullDimQNorm); TP 1 only, its weight
    replicated. Megatron-Core's own q/k norms are per head."""

    def __init__(self, config=None, hidden_size=None, eps=1e-6, width=None, **_):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(width))
        self.eps = eps

    def forward(self, x):
        flat = x.reshape(*x.shape[:-2], -1).float()
        flat = flat * torch.rsqrt(flat.pow(2).mean(-1, keepdim=True) + self.eps)
        return (flat * self.weight).to(x.dtype).view_as(x)


class ZeroCenteredRMSNorm(torch.nn.Module):
    """RMSNorm whose weight is stored minus one, x / rms(x) * (1 + weight) in fp32: Transformer Engine's RMSNorm with
    zero_centered_gamma, which Qwen3-Next's and Qwen3.5's configs ask for (layernorm_zero_centered_gamma). The local
    spec's torch norm refuses it (torch_norm.py, WrappedTorchNorm); this one holds the same single weight."""

    def __init__(self, config=None, hidden_size=None, eps=1e-6, **_):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(hidden_size))
        self.eps = eps

    def forward(self, x):
        y = x.float()
        y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps)
        return (y * (1.0 + self.weight.float())).to(x.dtype)


def l2norm(x, dim=-1, eps=1e-6):
    """x / sqrt(sum(x^2) + eps) over the last axis in fp32, as flash-linear-attention's l2norm and transformers'
    torch fallback (l2norm in modeling_qwen3_next.py) compute it."""
    y = x.float()
    return (y * torch.rsqrt(y.pow(2).sum(dim, keepdim=True) + eps)).to(x.dtype)


def without_flash_linear_attention():
    """Gated DeltaNet without flash-linear-attention (FLA): with config.deterministic_mode GatedDeltaNet runs
    torch's conv1d and Megatron-Core's own torch_chunk_gated_delta_rule (ssm/gated_delta_net/gdn.py); FLA's l2norm
    of q and k is the one kernel left, so it alone is stubbed (by the formula above), and common.py's HAVE_FLA,
    which refuses to build the module without FLA, is set. Nothing else of Megatron-Core is replaced."""
    from megatron.core.ssm.gated_delta_net import common, gdn

    common.HAVE_FLA = True
    common.l2norm = l2norm
    gdn.l2norm = l2norm  # gdn.py imported the name from common.py


def gated_delta_net_layer_specs(config):
    """Qwen3-Next's and Qwen3.5's layers with Megatron-Core's local modules: the local GPT layer spec, with
    GatedDeltaNet (local linears, as Megatron-Core's own local hybrid spec builds it:
    post_training/modelopt/hybrid/model_specs.py, gdn_layer) where linear_attention_freq says so, and zero-centered
    norms everywhere. The GDN layer's pre-norm is keyed self_attention.in_proj.layer_norm_weight, the Transformer
    Engine name (that spec's sharded_state_dict_keys_map); Megatron-Core's own builder of these layers
    (experimental_attention_variant_module_specs.py) supports Transformer Engine only."""
    from megatron.core.models.gpt.experimental_attention_variant_module_specs import (
        get_linear_attention_pattern, get_moe_layer_pattern)
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_local_spec
    from megatron.core.ssm.gated_delta_net import GatedDeltaNet, GatedDeltaNetSubmodules
    from megatron.core.tensor_parallel.layers import ColumnParallelLinear, RowParallelLinear
    from megatron.core.transformer.spec_utils import ModuleSpec

    without_flash_linear_attention()
    specs = []
    for linear, moe in zip(get_linear_attention_pattern(config), get_moe_layer_pattern(config)):
        layer = get_gpt_layer_local_spec(num_experts=config.num_moe_experts if moe else None, moe_grouped_gemm=False,
                                         qk_layernorm=True, normalization="RMSNorm")
        layer = copy.deepcopy(layer)
        sub = layer.submodules
        sub.input_layernorm = sub.pre_mlp_layernorm = ZeroCenteredRMSNorm
        if linear:
            sub.self_attention = ModuleSpec(module=GatedDeltaNet, submodules=GatedDeltaNetSubmodules(
                in_proj=ColumnParallelLinear, out_norm=ZeroCenteredRMSNorm, out_proj=RowParallelLinear))
            sub.sharded_state_dict_keys_map = {**sub.sharded_state_dict_keys_map,
                                               "input_layernorm.": "self_attention.in_proj.layer_norm_"}
        else:
            attention = sub.self_attention.submodules
            attention.q_layernorm = attention.k_layernorm = ZeroCenteredRMSNorm
        specs.append(layer)
    return specs


class GatedGroupRMSNorm(torch.nn.Module):
    """Mamba's output norm without mamba_ssm's triton kernel (layernorm_gated.RMSNorm, norm_before_gate False as
    MambaMixer requires): x * silu(z), RMS-normalized per group of group_size channels, times the weight. It takes
    the place of mamba_ssm's RMSNorm, from which MambaMixer's ExtendedRMSNorm derives (see with_torch_mamba_ssm)."""

    def __init__(self, hidden_size, eps=1e-5, group_size=None, norm_before_gate=False, device=None, dtype=None):
        super().__init__()
        assert not norm_before_gate
        self.weight = torch.nn.Parameter(torch.ones(hidden_size, device=device, dtype=dtype))
        self.eps = eps
        self.group_size = group_size or hidden_size

    def forward(self, x, z=None):
        y = x.float()
        if z is not None:
            y = y * F.silu(z.float())
        groups = y.unflatten(-1, (-1, self.group_size))
        groups = groups * torch.rsqrt(groups.pow(2).mean(-1, keepdim=True) + self.eps)
        return (groups.flatten(-2) * self.weight.float()).to(x.dtype)


def ssd_scan(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, dt_softplus=False,
             return_final_states=False, initial_states=None, **_):
    """mamba_ssm's mamba_chunk_scan_combined as the plain recurrence it computes in chunks, in fp32:
    h_t = exp(dt_t A) h_{t-1} + dt_t x_t B_t^T, y_t = h_t C_t + D x_t (x [b, l, heads, p], B and C [b, l, groups, n])."""
    assert z is None and not return_final_states and initial_states is None
    heads = x.shape[2]
    dt = dt.float() + (dt_bias.float() if dt_bias is not None else 0.0)
    dt = F.softplus(dt) if dt_softplus else dt
    B = B.float().repeat_interleave(heads // B.shape[2], dim=2)
    C = C.float().repeat_interleave(heads // C.shape[2], dim=2)
    xf = x.float()
    state = torch.zeros(x.shape[0], heads, x.shape[3], B.shape[3])
    ys = []
    for t in range(x.shape[1]):
        state = state * torch.exp(dt[:, t] * A)[..., None, None] + (dt[:, t, :, None] * xf[:, t])[..., None] * B[:, t, :, None, :]
        y = (state * C[:, t, :, None, :]).sum(-1)
        ys.append(y + (D.float()[:, None] * xf[:, t] if D is not None else 0.0))
    return torch.stack(ys, dim=1).to(x.dtype)


def with_torch_mamba_ssm():
    """Megatron-Core's MambaMixer without mamba_ssm (CUDA/triton kernels): use_mamba_mem_eff_path False takes its
    unfused path, where torch's conv1d runs when causal_conv1d is absent (mamba_mixer.py _static_prefill). The two
    mamba_ssm kernels left, the scan and the gated norm, are the torch functions above, handed to mamba_mixer.py's
    own import of mamba_ssm by stand-in modules that exist only while it imports (so that its ExtendedRMSNorm, with
    its sharded_state_dict, derives from the norm above as it would from mamba_ssm's). Call before anything imports
    megatron.core.ssm.mamba_mixer."""
    import types

    def fused_path(*_, **__):
        raise RuntimeError("megatron_check: the fused Mamba path needs mamba_ssm; use_mamba_mem_eff_path is off")

    kernels = {"mamba_ssm.ops.triton.layernorm_gated": {"RMSNorm": GatedGroupRMSNorm},
               "mamba_ssm.ops.triton.ssd_combined": {"mamba_chunk_scan_combined": ssd_scan,
                                                     "mamba_split_conv1d_scan_combined": fused_path}}
    names = ["mamba_ssm", "mamba_ssm.ops", "mamba_ssm.ops.triton", *kernels]
    assert "megatron.core.ssm.mamba_mixer" not in sys.modules and not any(n in sys.modules for n in names)
    for name in names:
        module = types.ModuleType(name)
        module.__dict__.update(kernels.get(name, {}))
        sys.modules[name] = module
    try:
        import megatron.core.ssm.mamba_mixer  # noqa: F401
    finally:
        for name in names:
            del sys.modules[name]


# transformers' NemotronH layer kinds (layers_block_type) as Megatron-Core's hybrid layer pattern symbols
# (models/hybrid/hybrid_layer_allocation.py, Symbols).
HYBRID_SYMBOLS = {"mamba": "M", "linear_attention": "M", "attention": "*", "full_attention": "*", "mlp": "-", "moe": "E"}


def build_hybrid_model(hf, config):
    """NemotronH as Megatron-Core's HybridModel with its local hybrid spec (post_training/modelopt/hybrid/
    model_specs.py, remap_te_layernorm: norms keyed by their Transformer Engine names, as moeport writes them). That
    spec's norms and the stack's final norm are Transformer Engine's; Megatron-Core's torch norm (WrappedTorchNorm,
    the same single weight) takes their place."""
    from megatron.core.models.hybrid import hybrid_block
    from megatron.core.models.hybrid.hybrid_model import HybridModel
    from megatron.core.post_training.modelopt.hybrid.model_specs import get_hybrid_stack_modelopt_spec
    from megatron.core.transformer.torch_norm import WrappedTorchNorm

    spec = get_hybrid_stack_modelopt_spec(local_core_attention=True, remap_te_layernorm=True)
    layers = spec.submodules
    layers.mamba_layer.submodules.norm = WrappedTorchNorm
    layers.attention_layer.submodules.input_layernorm = WrappedTorchNorm
    layers.mlp_layer.submodules.pre_mlp_layernorm = WrappedTorchNorm
    layers.moe_layer.submodules.pre_mlp_layernorm = WrappedTorchNorm
    hybrid_block.TENorm = WrappedTorchNorm
    kinds = hf.get("layers_block_type") or list(hf["hybrid_override_pattern"])
    return HybridModel(
        config=config,
        hybrid_stack_spec=spec,
        vocab_size=hf["vocab_size"],
        max_sequence_length=hf.get("max_position_embeddings", 4096),
        hybrid_layer_pattern="".join(HYBRID_SYMBOLS.get(k, k) for k in kinds),
        position_embedding_type="none",
        share_embeddings_and_output_weights=bool(hf.get("tie_word_embeddings", False)),
        parallel_output=False,
    )


class EagerAttention(torch.nn.Module):
    """Softmax attention with keys and values of their own widths, for MLA: Megatron-Core's local
    DotProductAttention takes one width only (MLA's core attention is Transformer Engine's). It holds no
    weights, so every weight still goes through Megatron-Core's own modules."""

    def __init__(self, config, layer_number, attn_mask_type, attention_type, softmax_scale=None,
                 k_channels=None, v_channels=None, **_):
        super().__init__()
        self.softmax_scale = softmax_scale  # None: 1/sqrt(the query's width)

    def forward(self, query, key, value, attention_mask, **_):
        # [s, b, n, d] -> [b, n, s, d]
        q, k, v = (t.permute(1, 2, 0, 3).float() for t in (query, key, value))
        scale = self.softmax_scale if self.softmax_scale is not None else q.shape[-1] ** -0.5
        scores = torch.matmul(q, k.transpose(-1, -2)) * scale
        scores = scores.masked_fill(attention_mask, float("-inf"))
        out = torch.matmul(torch.softmax(scores, dim=-1), v)  # [b, n, s, dv]
        b, n, s, dv = out.shape
        return out.permute(2, 0, 1, 3).reshape(s, b, n * dv).to(query.dtype)


def build_model(hf, config):
    if config.is_hybrid_model:
        return build_hybrid_model(hf, config)
    from megatron.core.models.gpt.gpt_layer_specs import get_gpt_decoder_block_spec
    from megatron.core.models.gpt.gpt_model import GPTModel

    from megatron.core.transformer.spec_utils import ModuleSpec

    if config.experimental_attention_variant is not None:
        from megatron.core.transformer.transformer_block import TransformerBlockSubmodules
        spec = TransformerBlockSubmodules(layer_specs=gated_delta_net_layer_specs(config), layer_norm=ZeroCenteredRMSNorm)
    else:
        spec = get_gpt_decoder_block_spec(config, use_transformer_engine=False, normalization="RMSNorm",
                                          qk_l2_norm=config.qk_l2_norm)
    if config.multi_latent_attention:
        for layer in spec.layer_specs:
            layer.submodules.self_attention.submodules.core_attention = EagerAttention
    if hf["model_type"] in ("olmoe", "minimax_m2"):
        if config.tensor_model_parallel_size != 1:
            raise SystemExit("megatron_check: the full-width q/k norms of olmoe and minimax_m2 run at --tp 1 only")
        head_dim = config.kv_channels or hf["hidden_size"] // hf["num_attention_heads"]
        for layer in spec.layer_specs:
            attention = layer.submodules.self_attention.submodules
            attention.q_layernorm = ModuleSpec(module=FullWidthRMSNorm, params={"width": hf["num_attention_heads"] * head_dim})
            attention.k_layernorm = ModuleSpec(module=FullWidthRMSNorm, params={"width": config.num_query_groups * head_dim})
    return GPTModel(
        config=config,
        transformer_layer_spec=spec,
        vocab_size=hf["vocab_size"],
        max_sequence_length=hf.get("max_position_embeddings", 4096),
        position_embedding_type="rope",
        rotary_percent=hf.get("partial_rotary_factor") or hf.get("rope_parameters", {}).get("partial_rotary_factor", 1.0),
        rotary_base=hf.get("rope_parameters", {}).get("rope_theta", 10000.0),
        share_embeddings_and_output_weights=bool(hf.get("tie_word_embeddings", False)),
        parallel_output=False,
    )


# Transformer Engine fuses the pre-norms into the next linear; the local spec keeps them as modules.
TE_TO_LOCAL = [
    (".self_attention.linear_qkv.layer_norm_weight", ".input_layernorm.weight"),
    (".mlp.linear_fc1.layer_norm_weight", ".pre_mlp_layernorm.weight"),
    (".self_attention.linear_q_up_proj.layer_norm_weight", ".self_attention.q_layernorm.weight"),
    (".self_attention.linear_kv_up_proj.layer_norm_weight", ".self_attention.kv_layernorm.weight"),
    (".self_attention.in_proj.layer_norm_weight", ".input_layernorm.weight"),  # Gated DeltaNet
    (".mixer.in_proj.layer_norm_weight", ".norm.weight"),  # Mamba
    # MambaMixer holds its convolution as parameters of its own, saved as conv1d.* (mamba_mixer.py sharded_state_dict)
    (".mixer.conv1d.weight", ".mixer.conv1d_weight"),
    (".mixer.conv1d.bias", ".mixer.conv1d_bias"),
]


def load_plain_state_dict(model, folder):
    from safetensors.torch import load_file

    state = {}
    for f in sorted(glob.glob(os.path.join(folder, "*.safetensors"))):
        state.update(load_file(f))
    renamed = {}
    for k, v in state.items():
        for te, local in TE_TO_LOCAL:
            if k.endswith(te):
                k = k[: -len(te)] + local
        renamed[k] = v
    result = model.load_state_dict(renamed, strict=False)
    report_keys(result.missing_keys, result.unexpected_keys)


def report_keys(missing, unexpected, optional_extra_state=True):
    missing = [k for k in missing if not (optional_extra_state and k.endswith("_extra_state"))]
    if missing or unexpected:
        print(f"megatron_check: missing {missing} unexpected {unexpected}", flush=True)
        raise SystemExit(1)


def sharded_state_dict(model):
    from megatron.core import parallel_state as mpu

    metadata = {"singleton_local_shards": False, "chained_optim_avoid_prefix": True,
                "dp_cp_group": mpu.get_data_parallel_group(with_context_parallel=True)}
    return model.sharded_state_dict(metadata=metadata)


def load_dist(model, folder):
    from megatron.core import dist_checkpointing
    from megatron.core.dist_checkpointing.validation import StrictHandling

    tracker = os.path.join(folder, "latest_checkpointed_iteration.txt")
    if os.path.exists(tracker):
        it = open(tracker).read().strip()
        folder = os.path.join(folder, "release" if it == "release" else f"iter_{int(it):07d}")
    sd = sharded_state_dict(model)
    # Strict both ways: every key the model asks for, the linears' (empty) _extra_state included, is in the
    # checkpoint, and the checkpoint holds nothing else. Megatron's words (dist_checkpointing/validation.py):
    # "missing" is in the checkpoint but not asked for, "unexpected" the reverse.
    loaded, not_asked, absent = dist_checkpointing.load(sd, folder, strict=StrictHandling.RETURN_ALL)
    report_keys(sorted(absent), sorted(not_asked), optional_extra_state=False)
    # The common state (checkpoint_version, iteration) comes back beside the weights; it is Megatron-LM's, not the model's.
    common = dist_checkpointing.load_common_state_dict(folder)
    result = model.load_state_dict({k: v for k, v in loaded.items() if k not in common}, strict=False)
    if torch.distributed.get_rank() == 0:
        print(f"common state: {common}", flush=True)
    report_keys(result.missing_keys, result.unexpected_keys)


class _CudaOnCpu:
    """torch.cuda as Megatron-Core sees it here: "the current device" is the CPU, the rest is CUDA's."""

    def current_device(self):
        return torch.device("cpu")

    def __getattr__(self, name):
        if not torch.cuda.is_available():
            # A CPU-only PyTorch (not the GPU machine's) has no streams or events; work on the host is in order.
            if name in ("Stream", "Event", "current_stream"):
                return lambda *_, **__: _HOST_STREAM
            if name == "stream":
                return lambda *_, **__: contextlib.nullcontext()
            if name == "synchronize":
                return lambda *_, **__: None
        return getattr(torch.cuda, name)


class _HostStream:
    """The CUDA stream and event calls of Megatron-Core's MoE layer, as no-ops."""

    def wait_stream(self, *_):
        pass

    def wait_event(self, *_):
        pass

    def record(self, *_):
        pass

    def record_event(self, *_):
        return self

    def synchronize(self):
        pass


_HOST_STREAM = _HostStream()


class _TorchOnCpu:
    cuda = _CudaOnCpu()

    def __getattr__(self, name):
        return getattr(torch, name)


def compute_on_cpu():
    """Megatron-Core allocates on torch.cuda.current_device() in places (rotary tables, dispatcher buffers);
    these ranks compute on the CPU under gloo, so its modules see a torch whose current device is the CPU."""
    import megatron.core.models.gpt.gpt_model  # noqa: F401  (everything the model uses, imported first)
    import megatron.core.transformer.moe.token_dispatcher  # noqa: F401
    import megatron.core.transformer.multi_latent_attention  # noqa: F401
    import megatron.core.ssm.gated_delta_net.gdn  # noqa: F401
    import megatron.core.ssm.mamba_mixer  # noqa: F401
    import megatron.core.models.hybrid.hybrid_model  # noqa: F401
    import megatron.core.dist_checkpointing.strategies.filesystem_async  # noqa: F401  (what dist_checkpointing.save
    import megatron.core.dist_checkpointing.strategies.state_dict_saver  # noqa: F401   imports when it runs)

    # The alltoall dispatcher turns its split sizes into host arrays only when they come from a GPU.
    from megatron.core.transformer.moe import token_dispatcher
    to_host = token_dispatcher.maybe_move_tensor_to_cpu

    def split_sizes_on_host(tensor, as_numpy=False, record_stream=False):
        if as_numpy and torch.is_tensor(tensor) and not tensor.is_cuda:
            return tensor.numpy()
        return to_host(tensor, as_numpy=as_numpy, record_stream=record_stream)

    token_dispatcher.maybe_move_tensor_to_cpu = split_sizes_on_host
    shim = _TorchOnCpu()
    for name, module in list(sys.modules.items()):
        # The RNG tracker keeps CUDA generator states: it alone sees the real current device.
        if (name.startswith("megatron.") and name != "megatron.core.tensor_parallel.random"
                and getattr(module, "torch", None) is torch):
            module.torch = shim


def main():
    args = parse_args()
    torch.distributed.init_process_group(backend="gloo")
    rank = torch.distributed.get_rank()
    from megatron.core import parallel_state as mpu
    from megatron.core.tensor_parallel.random import model_parallel_cuda_manual_seed

    mpu.initialize_model_parallel(tensor_model_parallel_size=args.tp, expert_model_parallel_size=args.ep,
                                  expert_tensor_parallel_size=1)
    # Every weight comes from the checkpoint: with a CPU-only PyTorch, Megatron's no-op (inference) RNG tracker stands
    # in for the CUDA generator states it cannot create.
    model_parallel_cuda_manual_seed(1234, inference_rng_tracker=not torch.cuda.is_available())
    hf = json.load(open(os.path.join(args.hf, "config.json")))
    if hf["model_type"] == "nemotron_h":
        with_torch_mamba_ssm()
    compute_on_cpu()
    model = build_model(hf, transformer_config(hf, args)).eval()
    if args.load:
        load_dist(model, args.load)
    else:
        load_plain_state_dict(model, args.state_dict)

    from safetensors.torch import load_file
    ids = load_file(args.logits)["input_ids"]
    positions = torch.arange(ids.shape[1]).unsqueeze(0).expand_as(ids)
    with torch.no_grad():
        # True marks what a position may not see (Megatron's default mask would be built on CUDA).
        causal = torch.triu(torch.ones(ids.shape[1], ids.shape[1], dtype=torch.bool), diagonal=1)[None, None]
        logits = model(ids, positions, attention_mask=causal).float()
    status = 0
    if rank == 0:
        import transformers
        ref_model = transformers.AutoModelForCausalLM.from_pretrained(args.hf, dtype=torch.float32).eval()
        with torch.no_grad():
            ref = ref_model(ids).logits.float()
        delta = (logits - ref).abs().max().item()
        agree = (logits.argmax(-1) == ref.argmax(-1)).float().mean().item()
        src = args.load or args.state_dict
        print(f"RESULT {hf['model_type']} tp={args.tp} ep={args.ep} from {src}: "
              f"max|delta| {delta:.3g} argmax agreement {agree:.4f}", flush=True)
        status = 1 if not delta <= args.tolerance else 0
    if args.save:
        from megatron.core import dist_checkpointing
        if args.save_dtype == "bf16":
            for name, buf in model.named_buffers():
                if not name.endswith("expert_bias"):
                    buf.data = buf.data.to(torch.bfloat16)
            for p in model.parameters():
                p.data = p.data.to(torch.bfloat16)
        os.makedirs(args.save, exist_ok=True)
        dist_checkpointing.save(sharded_state_dict(model), args.save)
        if rank == 0:
            print(f"saved {args.save}", flush=True)
    flag = torch.tensor([status])
    torch.distributed.all_reduce(flag)
    torch.distributed.destroy_process_group()
    sys.exit(1 if flag.item() else 0)


if __name__ == "__main__":
    main()
