#!/bin/bash
# The shipped drafter with its datastore, fp32, at the settings of docs/bench/humaneval-repeats/ (the stage-7 run
# without a datastore): HumanEval, 12 problems, every mode timed three times per problem (interleaved, the median
# call kept); then MT-bench extraction on three questions (the category where the one-question run has tree +
# copies behind prompt lookup).
cd "$(dirname "$0")/../../.."
out=docs/bench/datastore-repeats
common="--threads 2 --max-new-tokens 256 --draft-length 5 --hybrid-tokens 10 --decoding chain,tree --no-progress"
echo "=== humaneval $(date)"
.venv/bin/coral-hf bench --prompts humaneval --limit 12 --repeats 3 --dtype float32 $common \
  --json $out/humaneval-float32.json --report $out/humaneval-float32 > $out/humaneval-float32.log 2>&1
tail -30 $out/humaneval-float32.log
echo "=== extraction $(date)"
.venv/bin/coral-hf bench --prompts mtbench --categories extraction --limit 3 --dtype float32 $common \
  --json $out/extraction-float32.json --report $out/extraction-float32 > $out/extraction-float32.log 2>&1
tail -30 $out/extraction-float32.log
echo "=== done $(date)"
