#!/bin/bash
# HumanEval in bf16 (the one set below the bf16 goal of 2.5x) with the rebuilt datastore: 12 problems, every mode
# timed three times per problem, the settings of run.sh.
cd "$(dirname "$0")/../../.."
out=docs/bench/datastore-code2
common="--threads 2 --max-new-tokens 256 --draft-length 5 --hybrid-tokens 10 --decoding chain,tree --no-progress"
.venv/bin/coral-hf bench --prompts humaneval --limit 12 --repeats 3 --dtype bfloat16 $common \
  --json $out/humaneval-bfloat16.json --report $out/humaneval-bfloat16 > $out/humaneval-bfloat16.log 2>&1
tail -30 $out/humaneval-bfloat16.log
