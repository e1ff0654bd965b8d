#!/usr/bin/env bash
# Makes, here with Java, every quantized export of the architecture fixtures that transformers loads, for
# scripts/quality_report.py to compare with BF16 on a machine with PyTorch and transformers (no Java there).
#
#   scripts/quality_report.sh MOEPORT FIXTURES_DIR [OUT_DIR]      # e.g. bin/moeport ../shared/fixtures
#
# For each FIXTURES_DIR/<arch>/hf it writes OUT_DIR/<arch>/<format>.<flavor>/ (OUT_DIR: target/quality-exports):
#   fp8_pb.transformers and mxfp8.transformers for every architecture, mxfp4.transformers for GPT-OSS (its experts,
#   the only MXFP4 transformers loads), and fp8.modelopt for qwen3_moe: a Model Optimizer checkpoint, which
#   transformers 5.17 loads without its scales (../shared/spec/ENGINES.md), as the report's negative control.
# Each is checked with `moeport check`. An export moeport refuses is reported and skipped. Last it prints the
# command to run on the GPU machine. Exit status 1 if any export or check failed.
set -uo pipefail
moeport=${1:?usage: quality_report.sh MOEPORT FIXTURES_DIR [OUT_DIR]}
fixtures=${2:?usage: quality_report.sh MOEPORT FIXTURES_DIR [OUT_DIR]}
out=${3:-target/quality-exports}
failed=0

export_one() { # arch format flavor
  local arch=$1 format=$2 flavor=$3 dir=$out/$1/$2.$3
  if ! $moeport quantize --format "$format" --flavor "$flavor" --in "$fixtures/$arch/hf" --out "$dir" --overwrite >/dev/null \
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
  export_one "$arch" fp8_pb transformers
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
