"""Choose tree-decoding settings by measurement: tau and speedup of several tree sizes, interleaved per prompt.

    python scripts/sweep_tree.py --dtype bfloat16 --threads 2 --limit 2 --json docs/bench/tree-sweep-bf16.json
    python scripts/sweep_tree.py --dtype float32 --settings 4,3,2 8,4,2 16,5,4 --json tree-sweep-fp32.json
    python scripts/sweep_tree.py --prompt-lookup-tokens 10 --settings 8,3,2 16,4,4 --json tree-sweep-copies.json
    python scripts/sweep_tree.py --settings 8,3,2 10,6,2,0.3 --json tree-sweep-confidence.json
    python scripts/sweep_tree.py --prompt-lookup-tokens 10 --settings 8,3,2,0,4 6,3,2,0,2 --json tree-sweep-cap.json
    python scripts/sweep_tree.py --prompts mtbench --prompt-lookup-tokens 10 --settings 8,3,2 --copy-only-tokens 10 20

Each prompt (first turns of the held-out ShareGPT prompts) is generated greedily with plain `generate`, the chain
drafter (`assistant_model=`) and every tree setting `total,depth,top_k[,confidence_threshold]`
(`coral_hf.tree_generate`; the threshold defaults to 0, every level expanded; the fifth field caps a copy branch
that does not start with the drafter's top-1, `tree_unmatched_copy_tokens`), in a rotating order after a warm-up;
speedups are medians over prompts of per-prompt ratios, tau pools all rounds. Every output is checked against plain
greedy (ties at the dtype's resolution are counted apart, as in `coral-hf bench`). By default the drafter runs alone;
`--prompt-lookup-tokens N` adds the copy branch of up to N tokens (and the chain's hybrid copies), as the shipped
drafter decodes, and transformers' prompt-lookup decoding with N tokens as a baseline; `--copy-only-tokens` runs each
tree setting once per copy-only round length (`CoralConfig.copy_only_tokens`). `--prompts` takes any prompt set of
`coral-hf bench` (first turns only).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

import coral_hf
from coral_hf.commands import (
    add_drafter_dtype_argument,
    add_pack_weights_argument,
    load_drafter_for_timing,
    resolve_pack_weights_argument,
)
from coral_hf.eval.bench import RoundRecorder, encode_chat, first_divergence, machine_info
from coral_hf.eval.prompts import load_prompts

DEFAULT_SETTINGS = ("8,4,2", "16,5,4", "24,6,4", "32,6,8", "48,7,8", "64,8,10")


def _parse_setting(text: str) -> dict[str, float]:
    """`"10,6,2,0.3,4"` -> the `tree_generate` keyword arguments of that tree (threshold and unmatched-copy cap are
    optional: 0 and the drafter's own)."""
    parts = text.split(",")
    if len(parts) not in (3, 4, 5):
        raise SystemExit(f"error: tree setting {text!r} is not TOTAL,DEPTH,TOP_K[,THRESHOLD[,UNMATCHED_COPY]]")
    total, depth, top_k = (int(part) for part in parts[:3])
    setting = {
        "tree_total_tokens": total,
        "tree_depth": depth,
        "tree_top_k": top_k,
        "tree_confidence_threshold": float(parts[3]) if len(parts) >= 4 else 0.0,
    }
    if len(parts) == 5:
        setting["tree_unmatched_copy_tokens"] = int(parts[4])
    return setting


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--drafter", default="smollm2-135m-instruct")
    parser.add_argument("--dtype", default="bfloat16", choices=("float32", "bfloat16"))
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--prompts", default="sharegpt-heldout", help="Prompt set (first turns are used).")
    parser.add_argument("--categories", nargs="+", help="Only these categories of the prompt set.")
    parser.add_argument("--limit", type=int, default=2, help="Prompts per category.")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument(
        "--settings",
        nargs="+",
        default=list(DEFAULT_SETTINGS),
        metavar="TOTAL,DEPTH,TOP_K[,THRESHOLD[,UNMATCHED_COPY]]",
    )
    parser.add_argument(
        "--prompt-lookup-tokens", type=int, default=0, metavar="N", help="Copy branch length (0: drafter alone)."
    )
    parser.add_argument(
        "--copy-only-tokens", type=int, nargs="+", metavar="N", help="Run each setting with these copy-only lengths."
    )
    add_pack_weights_argument(parser)
    add_drafter_dtype_argument(parser)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    pack, packed_label = resolve_pack_weights_argument(args.pack_weights, dtype=dtype)
    target, tokenizer = coral_hf.load_target("smollm2-135m-instruct", dtype=dtype, pack_weights=pack)
    drafter, drafter_dtype_label = load_drafter_for_timing(args.drafter, target, pack, args.drafter_dtype)
    drafter.generation_config.prompt_lookup_num_tokens = args.prompt_lookup_tokens or None
    settings = {name: _parse_setting(name) for name in args.settings}
    copy_only: dict[str, int | None] = dict.fromkeys(settings)
    if args.copy_only_tokens:
        settings = {f"{name}/c{n}": value for name, value in settings.items() for n in args.copy_only_tokens}
        copy_only = {f"{name}/c{n}": n for name in args.settings for n in args.copy_only_tokens}

    def run(mode: str, input_ids: torch.Tensor) -> tuple[list[int], float, int]:
        rounds = RoundRecorder()
        kwargs: dict = {}
        drafter.generation_config.copy_only_tokens = copy_only.get(mode)  # the chain keeps the drafter's default
        if mode == "chain":
            kwargs = {"assistant_model": drafter, "streamer": rounds}
        elif mode == "prompt-lookup":
            kwargs = {"prompt_lookup_num_tokens": args.prompt_lookup_tokens, "streamer": rounds}
        elif mode != "plain":
            kwargs = {
                "custom_generate": coral_hf.tree_generate,
                "drafter": drafter,
                "tree_streamer": rounds,
                **settings[mode],
            }
        start = time.perf_counter()
        output = target.generate(input_ids, max_new_tokens=args.max_new_tokens, do_sample=False, **kwargs)
        seconds = time.perf_counter() - start
        tokens = output[0, input_ids.shape[1] :].tolist()
        return tokens, seconds, len(rounds.round_sizes) if mode != "plain" else len(tokens)

    modes = ["plain", "chain", *(["prompt-lookup"] if args.prompt_lookup_tokens else []), *settings]
    prompts = load_prompts(args.prompts, categories=args.categories, limit=args.limit)
    encoded = [encode_chat(tokenizer, [{"role": "user", "content": item.turns[0]}]) for item in prompts]
    for mode in modes:
        run(mode, encoded[0])  # warm-up
    speedups: dict[str, list[float]] = {mode: [] for mode in modes[1:]}
    by_category: dict[str, dict[str, list[float]]] = {}
    per_prompt: list[dict] = []
    tokens = {mode: 0 for mode in modes}
    forwards = {mode: 0 for mode in modes}
    identical = {mode: 0 for mode in modes[1:]}
    ties = {mode: 0 for mode in modes[1:]}
    for index, input_ids in enumerate(encoded):
        order = modes[index % len(modes) :] + modes[: index % len(modes)]
        results = {mode: run(mode, input_ids) for mode in order}
        per_prompt.append({"id": prompts[index].id, "category": prompts[index].category, "modes": {}})
        plain_tokens, plain_seconds, _ = results["plain"]
        for mode, (output, seconds, target_forwards) in results.items():
            tokens[mode] += len(output)
            forwards[mode] += target_forwards
            if mode == "plain":
                continue
            speedups[mode].append((len(output) / seconds) / (len(plain_tokens) / plain_seconds))
            by_category.setdefault(prompts[index].category, {}).setdefault(mode, []).append(speedups[mode][-1])
            per_prompt[-1]["modes"][mode] = {
                "tokens": len(output),
                "forwards": target_forwards,
                "speedup": round(speedups[mode][-1], 3),
            }
            found = first_divergence(
                target, tokenizer, input_ids, plain_tokens, output, prompt_id=str(index), turn=0, mode=mode
            )
            identical[mode] += found is None
            ties[mode] += found is not None and found.tie
        print(f"prompt {index + 1}/{len(encoded)} done", flush=True)
    report = {
        "dtype": args.dtype,
        "prompt_set": args.prompts,
        "prompts": len(encoded),
        "max_new_tokens": args.max_new_tokens,
        "prompt_lookup_tokens": args.prompt_lookup_tokens,
        "packed_weights": packed_label,
        "drafter_dtype": drafter_dtype_label,
        "machine": machine_info(torch.device("cpu")),
        "modes": {
            mode: {
                "tau": round(tokens[mode] / forwards[mode], 3),
                "speedup_median": round(statistics.median(speedups[mode]), 3),
                "identical": identical[mode],
                "ties": ties[mode],
                **{name.removeprefix("tree_"): value for name, value in settings.get(mode, {}).items()},
                **({"copy_only_tokens": copy_only[mode]} if copy_only.get(mode) else {}),
            }
            for mode in modes[1:]
        },
    }
    for mode, numbers in report["modes"].items():
        print(
            f"{mode:>10}: tau {numbers['tau']:.2f}  speedup {numbers['speedup_median']:.2f}x  "
            f"identical {numbers['identical']}/{len(encoded)} (ties {numbers['ties']})"
        )
    report["per_prompt"] = per_prompt
    if len(by_category) > 1:
        report["categories"] = {
            category: {mode: round(statistics.median(values), 3) for mode, values in modes_.items()}
            for category, modes_ in by_category.items()
        }
        for category, medians in report["categories"].items():
            print(f"{category:>12}: " + "  ".join(f"{mode} {value:.2f}x" for mode, value in medians.items()))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
