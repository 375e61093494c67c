#!/bin/bash
# Stage 8: the shipped stage-7 drafter continued on all 3,000 stdlib code answers, the 704 two-turn chats and 3,000
# first turns (`mix_chat_data.py --seed 8`), lr 1e-4, 1100 steps; then tree + copies tau of both drafters on the same
# first turns (fp32 target, bf16 drafter). Training ~80 min on 2 AMD EPYC cores, the comparison ~10 min.
cd "$(dirname "$0")/../../.."
.venv/bin/python scripts/mix_chat_data.py --seed 8 --output runs/regen/mix-code-chat-8.jsonl \
  artifacts/regen/stdlib-code-greedy.jsonl.gz artifacts/regen/sharegpt-turn2-greedy.jsonl.gz \
  artifacts/regen/sharegpt-turn1-greedy.jsonl.gz:3000
SEED=8 LR=1e-4 MAX_STEPS=1100 DATA=runs/regen/mix-code-chat-8.jsonl INIT=coral_hf/drafters/smollm2-135m-instruct \
  NAME=stage8-code examples/continue_smollm2_drafter.sh
.venv/bin/python scripts/plot_learning_curve.py runs/stage8-code --out docs/bench/stage8/learning-curve.png \
  --json docs/bench/stage8/learning-curve.json
.venv/bin/python scripts/compare_drafter_tau.py smollm2-135m-instruct runs/stage8-code \
  --json docs/bench/stage8/tau.json > docs/bench/stage8/tau.log 2>&1
