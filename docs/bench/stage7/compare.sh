#!/bin/bash
# Stage 7 (code + second turns) and the rebuilt shortlist against the shipped stage-6 drafter: first turns, fp32
# target, bf16 drafter, packed weights, 256 new tokens, tree 8/3/2 with copies (copy-only rounds of up to 16 tokens).
cd "$(dirname "$0")/../../.."
common="--dtype float32 --threads 2 --max-new-tokens 256 --prompt-lookup-tokens 10 --settings 8,3,2 --copy-only-tokens 16"
run() {  # set, limit, drafter, name
  .venv/bin/python scripts/sweep_tree.py --prompts $1 --limit $2 --drafter $3 $common \
    --json docs/bench/stage7/$1-$4.json > docs/bench/stage7/$1-$4.log 2>&1
  echo "== $1 $4"; grep -E "tau" docs/bench/stage7/$1-$4.log
}
run humaneval 12 smollm2-135m-instruct stage6
run humaneval 12 runs/stage6-sl stage6-sl
run humaneval 12 runs/stage7-code stage7
run humaneval 12 runs/stage7-code-sl stage7-sl
run sharegpt-heldout 4 smollm2-135m-instruct stage6
run sharegpt-heldout 4 runs/stage7-code-sl stage7-sl
