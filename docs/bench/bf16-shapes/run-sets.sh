#!/bin/bash
# The bf16 HumanEval (6) and ShareGPT held-out (3 conversations) runs of docs/bench/mtbench-wide-ties/ again, same
# settings and drafter, judged by the measured tie rule in the same run (on otherwise idle cores).
cd "$(dirname "$0")/../../.."
common="--threads 2 --max-new-tokens 256 --draft-length 5 --hybrid-tokens 10 --decoding chain,tree --no-progress"
for set in "humaneval --limit 6" "sharegpt-heldout --limit 3"; do
  name=$(echo $set | cut -d' ' -f1)-bfloat16
  echo "=== $name $(date)"
  .venv/bin/coral-hf bench --prompts $set --dtype bfloat16 $common --json docs/bench/bf16-shapes/$name.json \
    --report docs/bench/bf16-shapes/$name > docs/bench/bf16-shapes/$name.log 2>&1
  grep -v "Loading weights" docs/bench/bf16-shapes/$name.log | head -12
done
echo "=== done $(date)"
