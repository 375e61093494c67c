#!/bin/bash
# Stage 11b: stage 11 (fused target layers 1, 14, 26 on the stage-7 drafter, stage 9's data and order) at lr 3e-4
# for 350 steps (0.40M tokens), then tree + copies tau on the same first turns as stages 8-11.
cd "$(dirname "$0")/../../.."
FUSED="1 14 26" SEED=9 LR=3e-4 MAX_STEPS=350 DATA=runs/regen/mix-pkg-code-chat-9.jsonl \
  INIT=coral_hf/drafters/smollm2-135m-instruct NAME=stage11b-fused-lr3e-4 examples/continue_smollm2_drafter.sh
.venv/bin/python scripts/plot_learning_curve.py runs/stage11b-fused-lr3e-4 \
  --out docs/bench/stage11/learning-curve-lr3e-4.png --json docs/bench/stage11/learning-curve-lr3e-4.json
.venv/bin/python scripts/compare_drafter_tau.py runs/stage11b-fused-lr3e-4 --sets humaneval:30 mtbench:3 \
  sharegpt-heldout:12 --json docs/bench/stage11/tau-lr3e-4.json > docs/bench/stage11/tau-lr3e-4.log 2>&1
