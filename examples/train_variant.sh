#!/usr/bin/env bash
# Ablation / shipped-drafter training at an equal budget: same data, features, steps, seed; only the objective varies.
# usage: examples/train_variant.sh NAME UNROLL_STEPS CSRA_WEIGHT   (EPOCHS=3 for the shipped run; outputs under $RUNS, default runs/)
set -euo pipefail
name=$1; unroll=$2; csra=$3
cd "$(dirname "$0")/.." && . .venv/bin/activate
RUNS=${RUNS:-runs}
exec coral-hf train --target smollm2-135m-instruct --data sharegpt --max-samples 500 --max-length 320 \
  --feature-cache $RUNS/feature-cache --logit-positions 64 \
  --batch-size 4 --learning-rate 5e-4 --epochs "${EPOCHS:-1}" --unroll-steps "$unroll" --unroll-warmup-ratio 0.1 \
  --csra-weight "$csra" --csra-warmup-ratio 0.1 --save-steps 25 --save-total-limit 1 \
  --eval-steps 100 --eval-samples 10 --logging-steps 10 --seed 0 --output-dir "$RUNS/$name" --resume auto
