#!/bin/bash
# Benchmarks of the shipped (stage-7) drafter at 256 new tokens per turn, fp32 then bf16 (2 threads, packed weights, auto drafter dtype).
cd "$(dirname "$0")/../../.."
common="--threads 2 --max-new-tokens 256 --draft-length 5 --hybrid-tokens 10 --decoding chain,tree --no-progress"
for dtype in float32 bfloat16; do
  for set in "sharegpt-heldout --limit 3" "mtbench --limit 1" "humaneval --limit 6"; do
    name=$(echo $set | cut -d' ' -f1)-$dtype
    echo "=== $name $(date)"
    .venv/bin/coral-hf bench --prompts $set --dtype $dtype $common --json docs/bench/len256-stage7/$name.json --report docs/bench/len256-stage7/$name > docs/bench/len256-stage7/$name.log 2>&1
    tail -30 docs/bench/len256-stage7/$name.log | head -40
  done
done
echo "=== done $(date)"
