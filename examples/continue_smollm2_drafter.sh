#!/usr/bin/env bash
# Stage 2 (and later stages) of the shipped SmolLM2-135M-Instruct drafter (docs/results.md): continue from an earlier
# drafter (`--init-from`, $INIT, default the output of examples/train_smollm2_drafter.sh) on the whole usable ShareGPT
# set (~15k conversations after the held-out split; $DATA / $MAX_SAMPLES to train on another chat file, e.g. the
# output of `coral-hf regenerate`) in a new data order ($SEED, default 1), at a lower learning rate with a short
# warm-up for the fresh optimizer state. Resumable: rerun the same command after an interruption. Outputs under
# $RUNS (default runs/), in $NAME; $LR sets the learning rate; $LAYERS grows the drafter to that many decoder
# layers (the new ones start as the identity, `--num-draft-layers`); $FUSED adds fused target layers (e.g.
# "1 14 26", `--fused-feature-layers`).
set -euo pipefail
cd "$(dirname "$0")/.." && . .venv/bin/activate
RUNS=${RUNS:-runs}
exec coral-hf train --bf16 --cpu --data "${DATA:-sharegpt}" --max-samples "${MAX_SAMPLES:-17000}" \
  --max-length 512 --batch-size 4 --learning-rate "${LR:-2e-4}" --warmup-steps 60 --max-steps "${MAX_STEPS:-1800}" \
  --unroll-steps 3 --csra-weight 0.1 --shortlist-size 16384 --num-groups 256 --active-groups 16 --feature-weight 1.0 \
  --ce-weight 1.0 --draft-length 5 --save-steps 50 --save-total-limit 2 --eval-steps 100 --eval-samples 16 \
  --logging-steps 10 --seed "${SEED:-1}" ${LAYERS:+--num-draft-layers "$LAYERS"} \
  ${FUSED:+--fused-feature-layers $FUSED} \
  --init-from "${INIT:-$RUNS/smollm2-drafter}" --output-dir "$RUNS/${NAME:-smollm2-drafter-stage2}" --resume auto
