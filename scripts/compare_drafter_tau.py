"""Tree-decoding tau of several drafters on the same first turns: an acceptance comparison needing no idle cores.

    python scripts/compare_drafter_tau.py --json docs/bench/stage8/tau.json \
      smollm2-135m-instruct runs/stage8-code --sets humaneval:30 mtbench:3 sharegpt-heldout:12

Greedy tree decoding with each drafter's shipped settings (copies, and its datastore where it has one, included;
`--no-datastore` leaves the datastore out) on the first user turn of each prompt,
256 new tokens; tau = generated tokens / target forwards (prefill included), pooled per set, with each prompt's own.
Acceptance does not depend on timing, so this can run beside a training job (it only runs slower); whether a drafter
is faster is `coral-hf bench`'s job, on idle cores. Every drafter runs on the same target, loaded once.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

import coral_hf
from coral_hf.commands import load_drafter_for_timing, resolve_pack_weights_argument
from coral_hf.eval.bench import encode_chat, machine_info
from coral_hf.eval.prompts import load_prompts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("drafters", nargs="+", help="Drafter names or directories (a training run's output too).")
    parser.add_argument(
        "--sets",
        nargs="+",
        default=["humaneval:30", "mtbench:3", "sharegpt-heldout:12"],
        metavar="SET:LIMIT",
        help="Prompt sets and prompts per category.",
    )
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--no-datastore", action="store_true", help="Leave out each drafter's datastore branch.")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    pack, _ = resolve_pack_weights_argument("auto", dtype=dtype)
    target, tokenizer = coral_hf.load_target("smollm2-135m-instruct", dtype=dtype, pack_weights=pack)
    encoded = {}
    for spec in args.sets:
        name, _, limit = spec.partition(":")
        prompts = load_prompts(name, limit=int(limit) if limit else None)
        encoded[name] = [encode_chat(tokenizer, [{"role": "user", "content": item.turns[0]}]) for item in prompts]
    report = {
        "dtype": args.dtype,
        "max_new_tokens": args.max_new_tokens,
        "drafters": {},
    }
    for source in args.drafters:
        drafter, report["drafter_dtype"] = load_drafter_for_timing(source, target, pack)
        if args.no_datastore:
            drafter.datastore = None
        report["datastore"] = None if drafter.datastore is None else drafter.datastore.source
        report["drafters"][source] = {}
        for name, inputs in encoded.items():
            tokens = forwards = 0
            per_prompt = []
            for input_ids in inputs:
                output = target.generate(
                    input_ids,
                    max_new_tokens=args.max_new_tokens,
                    do_sample=False,
                    custom_generate=coral_hf.tree_generate,
                    drafter=drafter,
                )
                new_tokens = output.shape[1] - input_ids.shape[1]
                calls = drafter.last_generation_stats["rounds"] + 1  # the prefill's forward too
                tokens, forwards = tokens + new_tokens, forwards + calls
                per_prompt.append(round(new_tokens / calls, 3))
            entry = {
                "prompts": len(inputs),
                "tau": round(tokens / forwards, 3),
                "tokens": tokens,
                "forwards": forwards,
                "per_prompt": per_prompt,
            }
            report["drafters"][source][name] = entry
            print(f"{source}  {name} ({len(inputs)} prompts): tau {entry['tau']}", flush=True)
        drafter.detach()
    report["machine"] = machine_info(torch.device("cpu"))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
