#!/bin/bash
# MT-bench with three questions per category (48 turns) instead of one (16), fp32 then bf16, the shipped (stage-7)
# drafter at the settings of docs/bench/len256-stage7/ (2 threads, 256 new tokens, packed weights, auto drafter dtype):
# a category's verdict against prompt lookup on one question is a coin flip where the two are close.
cd "$(dirname "$0")/../../.."
common="--threads 2 --max-new-tokens 256 --draft-length 5 --hybrid-tokens 10 --decoding chain,tree --no-progress"
for dtype in float32 bfloat16; do
  name=mtbench-$dtype
  echo "=== $name $(date)"
  .venv/bin/coral-hf bench --prompts mtbench --limit 3 --dtype $dtype $common --json docs/bench/mtbench-wide/$name.json \
    --report docs/bench/mtbench-wide/$name > docs/bench/mtbench-wide/$name.log 2>&1
  tail -30 docs/bench/mtbench-wide/$name.log
done
echo "=== done $(date)"
