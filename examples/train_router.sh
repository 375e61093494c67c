#!/usr/bin/env bash
# Router stage for the shipped drafter: drafter frozen, G=256 clustered groups, k=16 active (1/16 of the LM head).
cd "$(dirname "$0")/.." && . .venv/bin/activate
RUNS=${RUNS:-runs}
exec coral-hf train --stage router --init-from "${INIT_FROM:-$RUNS/coral-3ep}" --target smollm2-135m-instruct --data sharegpt \
  --max-samples 500 --max-length 320 --feature-cache $RUNS/feature-cache --batch-size 4 --learning-rate 1e-3 \
  --epochs 1 --unroll-steps 3 --num-groups 256 --active-groups 16 --group-strategy cluster \
  --eval-steps 100 --eval-samples 10 --logging-steps 10 --seed 0 --output-dir "${OUTPUT_DIR:-$RUNS/coral-router}"
