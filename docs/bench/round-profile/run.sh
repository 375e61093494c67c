#!/bin/bash
# Where a tree round's time goes (stage-7 drafter, shipped settings, fp32 target, bf16 drafter, packed weights,
# 2 threads, 256 new tokens, first turns), beside plain generate and prompt lookup: ratios of summed times.
cd "$(dirname "$0")/../../.."
.venv/bin/python scripts/profile_tree_rounds.py --prompts humaneval --limit 6 \
  --json docs/bench/round-profile/humaneval.json 2>&1 | grep -v Loading
.venv/bin/python scripts/profile_tree_rounds.py --prompts mtbench --categories extraction --limit 10 \
  --json docs/bench/round-profile/extraction.json 2>&1 | grep -v Loading
