#!/bin/bash
# Stage 9: the shipped stage-7 drafter continued on new code: the target's answers to 3,200 stubs of installed
# algorithm packages (networkx, sympy, mpmath, numpy; `scripts/make_code_prompts.py --packages`, none of them read by
# a benchmark), with the 704 two-turn chats and 1,500 first turns as replay (`mix_chat_data.py --seed 9`), lr 1e-4,
# 850 steps; then tree + copies tau on the same first turns as stage 8 (fp32 target, bf16 drafter).
# The data step (~32 min on 2 AMD EPYC cores, resumable; its output is committed as
# artifacts/regen/pkg-code-greedy.jsonl.gz):
#   python scripts/make_code_prompts.py --packages networkx sympy mpmath numpy \
#     --output runs/regen/pkg-code-prompts.jsonl --max-samples 3200
#   coral-hf regenerate --data runs/regen/pkg-code-prompts.jsonl --max-turns 1 --batch-size 128 \
#     --max-new-tokens 256 --output runs/regen/pkg-code-greedy.jsonl
cd "$(dirname "$0")/../../.."
.venv/bin/python scripts/mix_chat_data.py --seed 9 --output runs/regen/mix-pkg-code-chat-9.jsonl \
  artifacts/regen/pkg-code-greedy.jsonl.gz artifacts/regen/sharegpt-turn2-greedy.jsonl.gz \
  artifacts/regen/sharegpt-turn1-greedy.jsonl.gz:1500
SEED=9 LR=1e-4 MAX_STEPS=${MAX_STEPS:-850} DATA=runs/regen/mix-pkg-code-chat-9.jsonl \
  INIT=coral_hf/drafters/smollm2-135m-instruct NAME=stage9-code examples/continue_smollm2_drafter.sh
.venv/bin/python scripts/plot_learning_curve.py runs/stage9-code --out docs/bench/stage9/learning-curve.png \
  --json docs/bench/stage9/learning-curve.json
.venv/bin/python scripts/compare_drafter_tau.py runs/stage9-code --sets humaneval:30 mtbench:3 sharegpt-heldout:12 \
  --json docs/bench/stage9/tau.json > docs/bench/stage9/tau.log 2>&1
