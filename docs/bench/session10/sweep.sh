#!/bin/bash
# Tenth session, on an AVX2-only AMD EPYC (no AVX-512, so no oneDNN bf16: `--dtype auto` is float32): a float32
# forward over 16 tree nodes costs 1.8 single-token forwards here (packed weights) against ~1.5 on the AVX-512
# EPYC of the earlier sessions. Does the shipped tree (8 / 3 / 2 with copies) still suit such a CPU, or does a
# smaller one win? HumanEval, first 12 problems, 256 new tokens, every setting with the copies as shipped.
set -e
cd "$(dirname "$0")/../../.."
out=docs/bench/session10
.venv/bin/python scripts/sweep_tree.py --dtype float32 --threads 2 --prompts humaneval --limit 12 \
  --max-new-tokens 256 --prompt-lookup-tokens 10 --settings 8,3,2 4,2,2 6,3,2 4,3,1 12,4,2 \
  --json $out/tree-sweep-avx2-humaneval.json > $out/tree-sweep-avx2-humaneval.log 2>&1
echo "=== done $(date)"
