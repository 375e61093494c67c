#!/bin/bash
# Stage 11: one change against stage 9 (docs/bench/stage9/run.sh): the shipped stage-7 drafter given EAGLE-3-style
# fused features, the outputs of target layers 1, 14 and 26 of 30 (`--fused-feature-layers 1 14 26`; their projection
# starts at zero, so training starts from the stage-7 drafter), then the same data, data order, learning rate and
# steps as stage 9 (the target's answers to 3,200 package-code stubs + 704 two-turn + 1,500 first-turn replays,
# seed 9, lr 1e-4, 850 steps); then tree + copies tau on the same first turns as stages 8 and 9.
cd "$(dirname "$0")/../../.."
[ -f runs/regen/mix-pkg-code-chat-9.jsonl ] || .venv/bin/python scripts/mix_chat_data.py --seed 9 \
  --output runs/regen/mix-pkg-code-chat-9.jsonl artifacts/regen/pkg-code-greedy.jsonl.gz \
  artifacts/regen/sharegpt-turn2-greedy.jsonl.gz artifacts/regen/sharegpt-turn1-greedy.jsonl.gz:1500
FUSED="1 14 26" SEED=9 LR=1e-4 MAX_STEPS=${MAX_STEPS:-850} DATA=runs/regen/mix-pkg-code-chat-9.jsonl \
  INIT=coral_hf/drafters/smollm2-135m-instruct NAME=stage11-fused examples/continue_smollm2_drafter.sh
.venv/bin/python scripts/plot_learning_curve.py runs/stage11-fused --out docs/bench/stage11/learning-curve.png \
  --json docs/bench/stage11/learning-curve.json
.venv/bin/python scripts/compare_drafter_tau.py runs/stage11-fused --sets humaneval:30 mtbench:3 sharegpt-heldout:12 \
  --json docs/bench/stage11/tau.json > docs/bench/stage11/tau.log 2>&1
