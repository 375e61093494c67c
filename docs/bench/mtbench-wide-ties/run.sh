#!/bin/bash
# The 48-turn bf16 MT-bench run of docs/bench/mtbench-wide/ again, same settings and drafter, with the lossless check
# on each call's own scores (a bf16 divergence is a tie when each call took its own argmax and ranks the pair within
# two ulps, the other way round): which divergences are rounding and which are not.
cd "$(dirname "$0")/../../.."
.venv/bin/coral-hf bench --prompts mtbench --limit 3 --dtype bfloat16 --threads 2 --max-new-tokens 256 --draft-length 5 \
  --hybrid-tokens 10 --decoding chain,tree --no-progress --json docs/bench/mtbench-wide-ties/mtbench-bfloat16.json \
  --report docs/bench/mtbench-wide-ties/mtbench-bfloat16 > docs/bench/mtbench-wide-ties/mtbench-bfloat16.log 2>&1
tail -40 docs/bench/mtbench-wide-ties/mtbench-bfloat16.log
