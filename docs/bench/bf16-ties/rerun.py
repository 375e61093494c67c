"""Rerun the bf16 MT-bench questions whose divergences exceeded the old tie bound (docs/bench/mtbench-wide/) with the
per-call tie check: `.venv/bin/python docs/bench/bf16-ties/rerun.py docs/bench/bf16-ties/ties.json 83,133,153`.

Same settings as docs/bench/mtbench-wide/run.sh (bf16, 2 threads, packed weights, 256 new tokens, draft length 5,
copies of up to 10 tokens, chain and tree); every mode of both turns of each question, lossless check only (the
timings of this run are not reported: another job shared the cores).
"""

import json
import sys

import torch

import coral_hf
from coral_hf.commands import resolve_drafter_dtype_argument, resolve_pack_weights_argument
from coral_hf.eval.bench import run_bench
from coral_hf.eval.prompts import load_prompts
from coral_hf.packed_linear import pack_linear_weights

torch.set_num_threads(2)
pack, _ = resolve_pack_weights_argument("auto")
target, tokenizer = coral_hf.load_target("smollm2-135m-instruct", dtype=torch.bfloat16, pack_weights=pack)
drafter_dtype, _ = resolve_drafter_dtype_argument("auto", target.dtype)
drafter = coral_hf.load_drafter("smollm2-135m-instruct", target=target, dtype=drafter_dtype)
if pack:
    pack_linear_weights(drafter)
prompts = [p for p in load_prompts("mtbench", limit=3) if p.id in sys.argv[2].split(",")]
result = run_bench(
    target,
    tokenizer,
    drafter,
    prompts,
    max_new_tokens=256,
    warmup=1,
    draft_length=5,
    hybrid_tokens=10,
    decoding=("chain", "tree"),
    draft_step_repetitions=0,
)
summary = result.summary()
report = {
    "divergences": summary["divergences"],
    "identical": {p.id: p.identical for p in result.prompts},
    "ties": {p.id: p.ties for p in result.prompts},
}
with open(sys.argv[1], "w") as handle:
    json.dump(report, handle, indent=1)
for d in summary["divergences"]:
    print(
        d["prompt_id"], d["turn"], d["mode"], d["position"], repr(d["plain_piece"]), repr(d["other_piece"]),
        d["top2_logit_gap"], d["plain_call_gap"], d["speculative_call_gap"], d["tie"],
    )  # fmt: skip
