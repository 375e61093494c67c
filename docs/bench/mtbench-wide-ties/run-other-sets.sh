#!/bin/bash
# The bf16 ShareGPT and HumanEval runs of docs/bench/len256-stage7/ again, same settings and drafter, with the
# lossless check on each call's own scores (see run.sh here).
cd "$(dirname "$0")/../../.."
common="--threads 2 --max-new-tokens 256 --draft-length 5 --hybrid-tokens 10 --decoding chain,tree --no-progress"
for set in "sharegpt-heldout --limit 3" "humaneval --limit 6"; do
  name=$(echo $set | cut -d' ' -f1)-bfloat16
  echo "=== $name $(date)"
  .venv/bin/coral-hf bench --prompts $set --dtype bfloat16 $common --json docs/bench/mtbench-wide-ties/$name.json \
    --report docs/bench/mtbench-wide-ties/$name > docs/bench/mtbench-wide-ties/$name.log 2>&1
  tail -30 docs/bench/mtbench-wide-ties/$name.log
done
echo "=== done $(date)"
