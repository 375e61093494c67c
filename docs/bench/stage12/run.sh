#!/bin/bash
# Stage 12: the run that separates stage 11b's two changes: stage 9's recipe (the stage-7 drafter, stage 9's data and
# order, no fused layers) at stage 11b's lr 3e-4 for 350 steps (0.40M tokens), then tree + copies tau on the same
# first turns as stages 8-11.
cd "$(dirname "$0")/../../.."
SEED=9 LR=3e-4 MAX_STEPS=350 DATA=runs/regen/mix-pkg-code-chat-9.jsonl \
  INIT=coral_hf/drafters/smollm2-135m-instruct NAME=stage12-lr3e-4 examples/continue_smollm2_drafter.sh
.venv/bin/python scripts/plot_learning_curve.py runs/stage12-lr3e-4 --out docs/bench/stage12/learning-curve.png \
  --json docs/bench/stage12/learning-curve.json
.venv/bin/python scripts/compare_drafter_tau.py runs/stage12-lr3e-4 --sets humaneval:30 mtbench:3 sharegpt-heldout:12 \
  --json docs/bench/stage12/tau.json > docs/bench/stage12/tau.log 2>&1
