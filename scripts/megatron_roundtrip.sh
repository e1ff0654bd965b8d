#!/usr/bin/env bash
# Megatron-Core round trip of moeport's outputs, on a machine with PyTorch and transformers (no Java needed
# beyond a moeport runtime: MOEPORT, e.g. an unpacked release's bin/moeport).
#
#   MOEPORT=bin/moeport MEGATRON=path/to/Megatron-LM scripts/megatron_roundtrip.sh FIXTURES_DIR WORK_DIR [ARCH...]
#
# For each architecture fixture (FIXTURES_DIR/<arch>/{hf,logits.safetensors}):
#  1. moeport import hf/ -> torch_dist (Transformer Engine names) and -> torch_dist with --megatron-spec local;
#  2. PyTorch's torch.distributed.checkpoint reads every tensor of both imports, equal to the safetensors import
#     (scripts/check_torch_dist.py);
#  3. Megatron-Core's dist_checkpointing.load loads the import into a GPTModel (local spec) resharded to
#     TP=2/EP=2 on 4 gloo ranks (TP=1/EP=2 for olmoe and minimax_m2); its fp32 logits are compared with transformers' fp32 logits of hf/;
#  4. what Megatron saves after that load is exported back by moeport and compared with hf/ bit for bit.
# Prints one RESULT line per check; exit status 1 if any failed.
set -uo pipefail
fixtures=$1 work=$2
shift 2
archs=${*:-qwen3_moe mixtral deepseek_v3 glm4_moe llama4 olmoe minimax_m2}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export PYTHONPATH=${MEGATRON:?set MEGATRON to a Megatron-LM checkout}${PYTHONPATH:+:$PYTHONPATH}
moeport=${MOEPORT:?set MOEPORT to bin/moeport}
torchrun="python3 -m torch.distributed.run --standalone"
failed=0
step() { echo "== $*"; "$@" || { echo "RESULT FAILED: $*"; failed=1; }; }

for arch in $archs; do
  hf=$fixtures/$arch/hf logits=$fixtures/$arch/logits.safetensors out=$work/$arch
  rm -rf "$out" && mkdir -p "$out"
  step $moeport import --in "$hf" --out "$out/te" --ckpt-format torch_dist
  step $moeport import --in "$hf" --out "$out/local" --ckpt-format torch_dist --megatron-spec local
  step $moeport import --in "$hf" --out "$out/reference" --ckpt-format safetensors --experts stacked
  step python3 "$here/check_torch_dist.py" "$out/te" "$out/reference"
  step python3 "$here/check_torch_dist.py" "$out/local" "$out/reference"
  # OLMoE's and MiniMax-M2's full-width q/k norms run at TP 1 (megatron_check.py, FullWidthRMSNorm).
  case $arch in olmoe|minimax_m2) tp=1 nproc=2 ;; *) tp=2 nproc=4 ;; esac
  step $torchrun --nproc-per-node $nproc "$here/megatron_check.py" --hf "$hf" --logits "$logits" \
    --load "$out/local" --tp $tp --ep 2 --save "$out/megatron_tp${tp}ep2"
  step $moeport export --in "$out/megatron_tp${tp}ep2" --hf-config "$hf" --out "$out/back"
  step $moeport verify "$hf" "$out/back"
done
exit $failed
