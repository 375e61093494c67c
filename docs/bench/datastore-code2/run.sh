#!/bin/bash
# The shipped datastore rebuilt with more code answers (regen.sh: the stubs of the same packages and of the standard
# library that the first files did not reach, and other installed packages), then the tree + copies tau on the
# first turns the earlier datastore was measured on (docs/bench/datastore/tau.json: fp32 target, bf16 drafter, 256
# new tokens), and the benchmark runs of docs/bench/datastore-repeats/ and docs/bench/mtbench-wide/ (fp32) with it.
set -e
cd "$(dirname "$0")/../../.."
out=docs/bench/datastore-code2
regen=artifacts/regen
.venv/bin/coral-hf datastore --drafter coral_hf/drafters/smollm2-135m-instruct --data \
  $regen/pkg-code-greedy.jsonl.gz $regen/pkg-code-greedy-more.jsonl.gz \
  $regen/stdlib-code-greedy.jsonl.gz $regen/stdlib-code-greedy-more.jsonl.gz $regen/pkg2-code-greedy.jsonl.gz \
  $regen/sharegpt-turn1-greedy.jsonl.gz $regen/sharegpt-turn2-greedy.jsonl.gz
.venv/bin/python scripts/compare_drafter_tau.py smollm2-135m-instruct --sets humaneval:30 mtbench:3 \
  sharegpt-heldout:12 --json $out/tau.json > $out/tau.log 2>&1
common="--threads 2 --max-new-tokens 256 --draft-length 5 --hybrid-tokens 10 --decoding chain,tree --no-progress"
echo "=== humaneval $(date)"
.venv/bin/coral-hf bench --prompts humaneval --limit 12 --repeats 3 --dtype float32 $common \
  --json $out/humaneval-float32.json --report $out/humaneval-float32 > $out/humaneval-float32.log 2>&1
tail -30 $out/humaneval-float32.log
echo "=== mtbench $(date)"
.venv/bin/coral-hf bench --prompts mtbench --limit 3 --dtype float32 $common \
  --json $out/mtbench-float32.json --report $out/mtbench-float32 > $out/mtbench-float32.log 2>&1
tail -30 $out/mtbench-float32.log
echo "=== done $(date)"
