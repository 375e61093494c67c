#!/bin/bash
# HumanEval, 12 problems, every mode timed three times per problem (interleaved, the median call kept): the shipped
# (stage-7) drafter at the settings of docs/bench/len256-stage7/, fp32, 2 threads, 256 new tokens.
cd "$(dirname "$0")/../../.."
.venv/bin/coral-hf bench --prompts humaneval --limit 12 --repeats 3 --dtype float32 --threads 2 --max-new-tokens 256 \
  --draft-length 5 --hybrid-tokens 10 --decoding chain,tree --no-progress \
  --json docs/bench/humaneval-repeats/humaneval-float32.json --report docs/bench/humaneval-repeats/humaneval-float32 \
  > docs/bench/humaneval-repeats/humaneval-float32.log 2>&1
tail -30 docs/bench/humaneval-repeats/humaneval-float32.log
