#!/bin/bash
# Eighth session: MT-bench math, all 10 questions (20 turns), bf16 with the datastore, every mode timed twice
# per turn. The seventh session's 48-turn bf16 run (3 questions a category, one call each) had tree + copies level
# with prompt lookup in math (2.47x vs 2.48x): the fast-path issue's per-category verdict, read on every math turn.
set -e
cd "$(dirname "$0")/../../.."
out=docs/bench/session8
common="--threads 2 --max-new-tokens 256 --draft-length 5 --hybrid-tokens 10 --decoding chain,tree --no-progress"
echo "=== mtbench math bfloat16 $(date)"
.venv/bin/coral-hf bench --prompts mtbench --categories math --limit 10 --repeats 2 --dtype bfloat16 $common \
  --json $out/math-bfloat16.json --report $out/math-bfloat16 > $out/math-bfloat16.log 2>&1
tail -30 $out/math-bfloat16.log
echo "=== done $(date)"
