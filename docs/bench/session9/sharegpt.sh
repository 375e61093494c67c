#!/bin/bash
# Ninth session: ShareGPT held-out in bf16 on 8 conversations, one timed call per mode and turn: the bf16 chat figure
# of the fast-path issue (3.72x) had been read on 3 conversations before the copies' vote; the settings of the eighth
# session's fp32 run (session8/sharegpt.sh).
set -e
cd "$(dirname "$0")/../../.."
out=docs/bench/session9
common="--threads 2 --max-new-tokens 256 --draft-length 5 --hybrid-tokens 10 --decoding chain,tree --no-progress"
echo "=== sharegpt-heldout bfloat16 $(date)"
.venv/bin/coral-hf bench --prompts sharegpt-heldout --limit 8 --dtype bfloat16 $common \
  --json $out/sharegpt8-bfloat16.json --report $out/sharegpt8-bfloat16 > $out/sharegpt8-bfloat16.log 2>&1
tail -30 $out/sharegpt8-bfloat16.log
echo "=== done $(date)"
