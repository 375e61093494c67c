#!/bin/bash
# Stage 10: one change against stage 9 (docs/bench/stage9/run.sh): the shipped stage-7 drafter grown to two decoder
# layers (`--num-draft-layers 2`; the new layer starts as the identity), then the same data, data order, learning
# rate and steps as stage 9 (the target's answers to 3,200 package-code stubs + 704 two-turn + 1,500 first-turn
# replays, seed 9, lr 1e-4, 850 steps); then tree + copies tau on the same first turns as stages 8 and 9.
cd "$(dirname "$0")/../../.."
[ -f runs/regen/mix-pkg-code-chat-9.jsonl ] || .venv/bin/python scripts/mix_chat_data.py --seed 9 \
  --output runs/regen/mix-pkg-code-chat-9.jsonl artifacts/regen/pkg-code-greedy.jsonl.gz \
  artifacts/regen/sharegpt-turn2-greedy.jsonl.gz artifacts/regen/sharegpt-turn1-greedy.jsonl.gz:1500
LAYERS=2 SEED=9 LR=1e-4 MAX_STEPS=${MAX_STEPS:-850} DATA=runs/regen/mix-pkg-code-chat-9.jsonl \
  INIT=coral_hf/drafters/smollm2-135m-instruct NAME=stage10-2layers examples/continue_smollm2_drafter.sh
.venv/bin/python scripts/plot_learning_curve.py runs/stage10-2layers --out docs/bench/stage10/learning-curve.png \
  --json docs/bench/stage10/learning-curve.json
.venv/bin/python scripts/compare_drafter_tau.py runs/stage10-2layers --sets humaneval:30 mtbench:3 sharegpt-heldout:12 \
  --json docs/bench/stage10/tau.json > docs/bench/stage10/tau.log 2>&1
