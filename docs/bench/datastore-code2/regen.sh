#!/bin/bash
# More code answers for the datastore (sixth session): the stubs of networkx/sympy/mpmath/numpy and of the standard
# library that the committed files did not reach (their prompt files are the same seed-0 shuffles, longer, so the
# finished ids are skipped), and 4,000 stubs of other installed packages (none read by a benchmark). Greedy, bf16,
# 256 new tokens, resumable: rerun after an interruption.
set -e
cd "$(dirname "$0")/../../.."
python=.venv/bin/python
$python scripts/make_code_prompts.py --packages networkx sympy mpmath numpy --max-samples 4804 \
  --output runs/regen/pkg-code-prompts-all.jsonl
$python scripts/make_code_prompts.py --max-samples 3414 --output runs/regen/stdlib-code-prompts-all.jsonl
$python scripts/make_code_prompts.py --packages pandas matplotlib pydantic rich click jinja2 requests urllib3 \
  fontTools dateutil yaml pygments datasets huggingface_hub accelerate peft --max-samples 4000 \
  --output runs/regen/pkg2-code-prompts.jsonl
[ -f runs/regen/pkg-code-greedy-all.jsonl ] || gunzip -c artifacts/regen/pkg-code-greedy.jsonl.gz > runs/regen/pkg-code-greedy-all.jsonl
[ -f runs/regen/stdlib-code-greedy-all.jsonl ] || gunzip -c artifacts/regen/stdlib-code-greedy.jsonl.gz > runs/regen/stdlib-code-greedy-all.jsonl
for name in pkg stdlib; do
  .venv/bin/coral-hf regenerate --data runs/regen/$name-code-prompts-all.jsonl --max-turns 1 --batch-size 128 \
    --max-new-tokens 256 --no-progress --output runs/regen/$name-code-greedy-all.jsonl
done
.venv/bin/coral-hf regenerate --data runs/regen/pkg2-code-prompts.jsonl --max-turns 1 --batch-size 128 \
  --max-new-tokens 256 --no-progress --output runs/regen/pkg2-code-greedy.jsonl
