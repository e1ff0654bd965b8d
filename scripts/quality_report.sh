#!/usr/bin/env bash
# Makes, here with Java, every quantized export of the architecture fixtures that transformers loads, for
# scripts/quality_report.py to compare with BF16 on a machine with PyTorch and transformers (no Java there).
#
#   scripts/quality_report.sh MOEPORT FIXTURES_DIR [OUT_DIR]      # e.g. bin/moeport ../shared/fixtures
#
# For each FIXTURES_DIR/<arch>/hf it writes OUT_DIR/<arch>/<format>.<flavor>/ (OUT_DIR: target/quality-exports):
#   fp8_pb.transformers (weights that are not whole 128 x 128 blocks excluded) and mxfp8.transformers for every
#   architecture, mxfp4.transformers for GPT-OSS (its experts, the only MXFP4 transformers loads), and
#   fp8.modelopt for qwen3_moe: a Model Optimizer checkpoint, which transformers 5.17 loads without its scales
#   (../shared/spec/ENGINES.md), as the report's negative control.
# Each is checked with `moeport check`. An export moeport refuses is reported and skipped. Last it prints the
# command to run on the GPU machine. Exit status 1 if any export or check failed.
set -uo pipefail
moeport=${1:?usage: quality_report.sh MOEPORT FIXTURES_DIR [OUT_DIR]}
fixtures=${2:?usage: quality_report.sh MOEPORT FIXTURES_DIR [OUT_DIR]}
out=${3:-target/quality-exports}
failed=0

# Weights that are not whole 128 x 128 blocks, which moeport refuses to write for transformers (its FP8
# dequantization would mis-block them): kept in BF16 in the fp8_pb exports.
fp8_pb_exclusion() {
  case $1 in
    deepseek_v3) echo '*q_b_proj' ;;          # 192 rows
    nemotron_h_*) echo '*mixer.in_proj' ;;    # 1096 and 584 rows
    *) echo '' ;;
  esac
}

export_one() { # arch format flavor [moeport options]
  local arch=$1 format=$2 flavor=$3 dir=$out/$1/$2.$3
  shift 3
  if ! $moeport quantize --format "$format" --flavor "$flavor" --in "$fixtures/$arch/hf" --out "$dir" --overwrite "$@" >/dev/null \
      || ! $moeport check "$dir" >/dev/null; then
    echo "FAILED: $arch $format.$flavor" >&2
    rm -rf "$dir"
    failed=1
    return
  fi
  echo "$arch $format.$flavor"
}

rm -rf "$out" && mkdir -p "$out"
for hf in "$fixtures"/*/hf; do
  arch=$(basename "$(dirname "$hf")")
  exclusion=$(fp8_pb_exclusion "$arch")
  export_one "$arch" fp8_pb transformers ${exclusion:+--exclude "$exclusion"}
  export_one "$arch" mxfp8 transformers
  if grep -q '"model_type": *"gpt_oss"' "$hf/config.json"; then
    export_one "$arch" mxfp4 transformers
  fi
  if [ "$arch" = qwen3_moe ]; then
    export_one "$arch" fp8 modelopt
  fi
done
echo "exports in $out ($(du -sh "$out" | cut -f1)); on the GPU machine, with the same fixtures folder:"
echo "  python3 scripts/quality_report.py --exports $out --fixtures $fixtures"
exit $failed
