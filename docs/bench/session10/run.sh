#!/bin/bash
# Tenth session, on an AVX2-only AMD EPYC (no AVX-512: no native bf16, so `--dtype auto` is float32): what a user of
# such a CPU sees with the shipped drafter, every mode interleaved, the settings of the README's rows. ShareGPT
# held-out (3 conversations, as the README's first row) and HumanEval (first 12 problems).
set -e
cd "$(dirname "$0")/../../.."
out=docs/bench/session10
common="--dtype auto --threads 2 --max-new-tokens 256 --draft-length 5 --hybrid-tokens 10 --decoding chain,tree --no-progress"
for set in sharegpt-heldout:3 humaneval:12; do
  name=${set%%:*}; limit=${set##*:}
  echo "=== $name $limit $(date)"
  .venv/bin/coral-hf bench --prompts $name --limit $limit $common \
    --json $out/$name-avx2.json --report $out/$name-avx2 > $out/$name-avx2.log 2>&1
  tail -25 $out/$name-avx2.log
done
echo "=== done $(date)"
