#!/bin/bash
# The bf16 turns whose divergences the per-call check called true (docs/bench/mtbench-wide-ties/: MT-bench 112 and
# 153, ShareGPT held-out conversation 1, HumanEval/1; prompts.jsonl holds them as the prompt sets give them) again,
# same settings and drafter, with the tie rule of coral_hf.eval.ties: the plain call's pair gap within two ulps, or
# else one of the target's own evaluations of the prefix (one full forward; the prefill and then k-token chunks,
# k = 2..16) ranking the pair within two ulps or the other way round. MT-bench 151 and 152 (the other two, called
# true on the speculative call's gap alone) run separately (prompts-151-152.jsonl). Lossless check only: the timings
# are not reported (the first call shared the cores with another job for a while).
cd "$(dirname "$0")/../../.."
out=docs/bench/bf16-shapes
.venv/bin/coral-hf bench --prompts $out/prompts.jsonl --dtype bfloat16 --threads 2 --max-new-tokens 256 \
  --draft-length 5 --hybrid-tokens 10 --decoding chain,tree --warmup 0 --draft-step-repetitions 0 --no-progress \
  --json $out/bench.json --report $out/report > $out/bench.log 2>&1
.venv/bin/coral-hf bench --prompts $out/prompts-151-152.jsonl --dtype bfloat16 --threads 2 --max-new-tokens 256 \
  --draft-length 5 --hybrid-tokens 10 --decoding chain,tree --warmup 0 --draft-step-repetitions 0 --no-progress \
  --json $out/bench-151-152.json --report $out/report-151-152 > $out/bench-151-152.log 2>&1
tail -40 $out/bench.log $out/bench-151-152.log
