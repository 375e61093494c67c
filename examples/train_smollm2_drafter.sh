#!/usr/bin/env bash
# The shipped SmolLM2-135M-Instruct drafter's recipe (docs/results.md): bf16 on a CPU with native bf16, online target
# features, 16k-token draft vocabulary, multi-step (3) + CSRA (0.1), soft CE weight 1.0 on every position.
# Resumable: rerun the same command after an interruption. Outputs under $RUNS (default runs/).
set -euo pipefail
cd "$(dirname "$0")/.." && . .venv/bin/activate
RUNS=${RUNS:-runs}
exec coral-hf train --bf16 --cpu --data sharegpt --max-samples 12000 --max-length 512 --batch-size 4 \
  --learning-rate 5e-4 --max-steps "${MAX_STEPS:-1900}" --unroll-steps 3 --csra-weight 0.1 --shortlist-size 16384 --num-groups 256 --active-groups 16 \
  --feature-weight 1.0 --ce-weight 1.0 --draft-length 5 --save-steps 100 --save-total-limit 2 --eval-steps 100 \
  --eval-samples 16 --logging-steps 20 --seed 0 --output-dir "$RUNS/${NAME:-smollm2-drafter}" --resume auto
