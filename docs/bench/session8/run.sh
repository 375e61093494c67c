#!/bin/bash
# Eighth session: HumanEval fp32 on all 164 problems, one timed call per mode (interleaved, rotating), every mode of
# the seventh session's 30-problem run. Settles the acceptance issue's 2x line on HumanEval beyond that run's
# interval (1.94-2.24x over 30 problems): the median over 164 problems, with its bootstrap interval.
set -e
cd "$(dirname "$0")/../../.."
out=docs/bench/session8
common="--threads 2 --max-new-tokens 256 --draft-length 5 --hybrid-tokens 10 --decoding chain,tree --no-progress"
echo "=== humaneval-164 float32 $(date)"
.venv/bin/coral-hf bench --prompts humaneval --dtype float32 $common \
  --json $out/humaneval164-float32.json --report $out/humaneval164-float32 > $out/humaneval164-float32.log 2>&1
tail -30 $out/humaneval164-float32.log
echo "=== done $(date)"
