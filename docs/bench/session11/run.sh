#!/bin/bash
# Eleventh session, on an AVX2-only AMD EPYC (no AVX-512, so oneDNN has no bf16 kernels): what a user who keeps the
# target in bf16 there gets from speculation, every mode against plain bf16 generate(), interleaved.
set -e
cd "$(dirname "$0")/../../.."
out=docs/bench/session11
.venv/bin/coral-hf bench --prompts sharegpt-heldout --limit 2 --dtype bfloat16 --threads 2 --max-new-tokens 128 \
  --draft-length 5 --hybrid-tokens 10 --decoding chain,tree --no-progress --json $out/sharegpt-bf16-avx2.json \
  2>&1 | grep -v "Loading weights" > $out/sharegpt-bf16-avx2.log
