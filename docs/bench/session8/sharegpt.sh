#!/bin/bash
# Eighth session: ShareGPT held-out in fp32 on 8 conversations (the earlier fp32 figure, 2.17x, read 3), every mode
# once per turn, interleaved: the acceptance issue's chat set on more conversations, with copies by vote.
set -e
cd "$(dirname "$0")/../../.."
out=docs/bench/session8
common="--threads 2 --max-new-tokens 256 --draft-length 5 --hybrid-tokens 10 --decoding chain,tree --no-progress"
echo "=== sharegpt-heldout float32 $(date)"
.venv/bin/coral-hf bench --prompts sharegpt-heldout --limit 8 --dtype float32 $common \
  --json $out/sharegpt8-float32.json --report $out/sharegpt8-float32 > $out/sharegpt8-float32.log 2>&1
tail -30 $out/sharegpt8-float32.log
echo "=== done $(date)"
