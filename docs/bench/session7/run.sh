#!/bin/bash
# Seventh session (shipped drafter and datastore unchanged since docs/bench/datastore-code2/):
# 1. HumanEval fp32 on 30 problems, every mode timed three times per problem: the 2x line of the acceptance issue
#    read on more problems than the 12 of datastore-code2 (whose median was 1.98x).
# 2. MT-bench's 48 turns in bf16 with the datastore in the hybrid modes (mtbench-wide/ ran bf16 before it existed):
#    the per-category verdict of the fast-path issue (hybrid >= the better of drafter and prompt lookup) in bf16.
set -e
cd "$(dirname "$0")/../../.."
out=docs/bench/session7
common="--threads 2 --max-new-tokens 256 --draft-length 5 --hybrid-tokens 10 --decoding chain,tree --no-progress"
echo "=== humaneval-30 float32 $(date)"
.venv/bin/coral-hf bench --prompts humaneval --limit 30 --repeats 3 --dtype float32 $common \
  --json $out/humaneval30-float32.json --report $out/humaneval30-float32 > $out/humaneval30-float32.log 2>&1
tail -30 $out/humaneval30-float32.log
echo "=== mtbench bfloat16 $(date)"
.venv/bin/coral-hf bench --prompts mtbench --limit 3 --dtype bfloat16 $common \
  --json $out/mtbench-bfloat16.json --report $out/mtbench-bfloat16 > $out/mtbench-bfloat16.log 2>&1
tail -30 $out/mtbench-bfloat16.log
echo "=== done $(date)"
