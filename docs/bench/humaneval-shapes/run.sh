#!/bin/bash
# Tree sizes for HumanEval with the stage-7 drafter: first turns of 12 problems, fp32 target, bf16 drafter, packed
# weights, 256 new tokens, copies of up to 10 tokens (16 in copy-only rounds), every mode interleaved per prompt.
cd "$(dirname "$0")/../../.."
common="--prompts humaneval --limit 12 --dtype float32 --threads 2 --max-new-tokens 256 --prompt-lookup-tokens 10 --copy-only-tokens 16"
.venv/bin/python scripts/sweep_tree.py $common --settings 8,3,2 10,4,2 12,5,2 12,6,2,0.2 16,6,3,0.2 \
  --json docs/bench/humaneval-shapes/he-shapes.json
.venv/bin/python scripts/sweep_tree.py $common --settings 8,3,2 6,3,2 6,3,2,0,2 7,3,2,0,2 8,3,2,0,2 \
  --json docs/bench/humaneval-shapes/he-small.json
