#!/bin/bash
# Benchmarks of the shipped drafter (stage 7) with its datastore (`coral-hf datastore`, the target's own answers) at
# 256 new tokens per turn, fp32 then bf16 (2 threads, packed weights, auto drafter dtype), the settings of
# docs/bench/len256-stage7; then HumanEval once more in each dtype without the datastore branch (--no-datastore),
# to read what it adds on the same machine.
cd "$(dirname "$0")/../../.."
out=docs/bench/len256-datastore
common="--threads 2 --max-new-tokens 256 --draft-length 5 --hybrid-tokens 10 --decoding chain,tree --no-progress"
run() {  # name, then bench arguments
  name=$1; shift
  echo "=== $name $(date)"
  .venv/bin/coral-hf bench "$@" $common --json $out/$name.json --report $out/$name > $out/$name.log 2>&1
  tail -30 $out/$name.log | head -40
}
for dtype in float32 bfloat16; do
  for set in "sharegpt-heldout --limit 3" "mtbench --limit 1" "humaneval --limit 6"; do
    run "$(echo $set | cut -d' ' -f1)-$dtype" --prompts $set --dtype $dtype
  done
done
for dtype in float32 bfloat16; do
  run "humaneval-$dtype-no-datastore" --prompts humaneval --limit 6 --dtype $dtype --no-datastore
done
echo "=== done $(date)"
