#!/bin/bash
# Copies by vote over the occurrences of the longest repeated suffix (up to 8 tokens) instead of after the latest
# occurrence of the last 2: HumanEval fp32, the 12 problems x 3 calls of docs/bench/datastore-code2/run.sh (before:
# tree + copies 3.43 / 1.98x, decoding 2.10x), same settings.
cd "$(dirname "$0")/../../.."
out=docs/bench/session7
common="--threads 2 --max-new-tokens 256 --draft-length 5 --hybrid-tokens 10 --decoding chain,tree --no-progress"
.venv/bin/coral-hf bench --prompts humaneval --limit 12 --repeats 3 --dtype float32 $common \
  --json $out/humaneval12-vote-float32${RUN:+-$RUN}.json --report $out/humaneval12-vote-float32${RUN:+-$RUN} > $out/humaneval12-vote-float32${RUN:+-$RUN}.log 2>&1
tail -30 $out/humaneval12-vote-float32${RUN:+-$RUN}.log
