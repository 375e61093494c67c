#!/bin/bash
# Ninth session: HumanEval in bf16 on all 164 problems, one timed call per mode (interleaved, rotating), the
# settings of the eighth session's fp32 run (session8/run.sh). The fast-path issue's bf16 goal on code had been
# read on 6 problems (2.12x); a round profile of those 6 (scripts/profile_tree_rounds.py --dtype bfloat16) put
# the ratio of summed times at 2.56x, so the verdict is read on the whole set.
set -e
cd "$(dirname "$0")/../../.."
out=docs/bench/session9
common="--threads 2 --max-new-tokens 256 --draft-length 5 --hybrid-tokens 10 --decoding chain,tree --no-progress"
echo "=== humaneval-164 bfloat16 $(date)"
.venv/bin/coral-hf bench --prompts humaneval --dtype bfloat16 $common \
  --json $out/humaneval164-bfloat16.json --report $out/humaneval164-bfloat16 > $out/humaneval164-bfloat16.log 2>&1
tail -30 $out/humaneval164-bfloat16.log
echo "=== done $(date)"
