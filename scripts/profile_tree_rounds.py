"""Where a tree-decoding round's time goes, in plain decoding steps, beside plain generate and prompt lookup.

    python scripts/profile_tree_rounds.py --prompts humaneval --limit 6
    python scripts/profile_tree_rounds.py --prompts mtbench --categories extraction --limit 10 --settings 8,3,2 6,3,2

For each prompt (first turns), greedy, 256 new tokens by default: plain `generate`, tree decoding with the drafter's
shipped settings (copies included) and transformers' prompt lookup, one after the other. Reports the time of each
mode summed over prompts (ratios of totals, so long answers weigh more than in `coral-hf bench`'s medians), the
tree's rounds split into drafting (`TreeDecoder.build_tree`: drafter forwards and tree building), verification (the
target forward and the acceptance walk) and cache compaction, each in plain steps (the plain call's seconds per
token, prefill included: the tree's own prefill shows up under "rest"), and how many draft tokens each round
accepted, and where the target's token ranked in the drafter's distribution at the root (in all rounds that ran
the drafter, and in those that accepted nothing: a miss beyond the tree's width at the root is out of reach of any
tree shape). In bfloat16 the tree's output may part from plain greedy at numerical ties (counted, not checked:
`coral-hf bench` classifies them), so speeds are per generated token; float32 outputs must match. A maintainer's
tool for deciding what to make cheaper: `coral-hf bench` is the measurement of record.
"""

from __future__ import annotations

import argparse
import collections
import json
import time
from pathlib import Path

import torch

import coral_hf
from coral_hf.commands import load_drafter_for_timing, resolve_pack_weights_argument
from coral_hf.eval.bench import encode_chat, machine_info
from coral_hf.eval.prompts import load_prompts
from coral_hf.eval.ties import is_low_precision
from coral_hf.tree_decoding import TreeDecoder

PHASES = ("build_tree", "verify", "commit")


RANK_BUCKETS = ((1, "1"), (2, "2"), (4, "3-4"), (8, "5-8"), (16, "9-16"))


def _rank_bucket(rank: int) -> str:
    return next((label for most, label in RANK_BUCKETS if rank <= most), ">16")


def _timed(
    seconds: dict[str, float],
    accepted: collections.Counter,
    sizes: collections.Counter,
    root_ranks: dict[str, collections.Counter],
) -> None:
    """Wrap the TreeDecoder phases so each call adds its wall time (and the verified tree's size and accepted path),
    and record where the target's token ranked in the drafter's root distribution (rounds that ran the drafter)."""
    root: dict[str, torch.Tensor | None] = {"log_probs": None}
    log_probs = TreeDecoder._log_probs

    def first_log_probs(self, features):
        result = log_probs(self, features)
        if root["log_probs"] is None:  # a round's first call is the root's
            root["log_probs"] = result.reshape(-1, result.shape[-1])[0]
        return result

    TreeDecoder._log_probs = first_log_probs
    for name in PHASES:
        method = getattr(TreeDecoder, name)

        def wrapper(self, *args, _method=method, _name=name, **kwargs):
            if _name == "build_tree":
                root["log_probs"] = None
            start = time.perf_counter()
            result = _method(self, *args, **kwargs)
            seconds[_name] += time.perf_counter() - start
            if _name == "verify":
                accepted[len(result[0]) - 1] += 1
                sizes[len(args[1])] += 1
                if root["log_probs"] is not None:
                    token_log_prob = root["log_probs"][result[1][0]]
                    bucket = _rank_bucket(int((root["log_probs"] > token_log_prob).sum()) + 1)
                    root_ranks["all"][bucket] += 1
                    if len(result[0]) == 1:
                        root_ranks["accepted_nothing"][bucket] += 1
            return result

        setattr(TreeDecoder, name, wrapper)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--drafter", default="smollm2-135m-instruct")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--prompts", default="humaneval")
    parser.add_argument("--categories", nargs="+")
    parser.add_argument("--limit", type=int, default=6, help="Prompts per category.")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument(
        "--settings", nargs="+", metavar="TOTAL,DEPTH,TOP_K", help="Tree sizes to profile (default: the drafter's)."
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    pack, _ = resolve_pack_weights_argument("auto", dtype=dtype)
    target, tokenizer = coral_hf.load_target("smollm2-135m-instruct", dtype=dtype, pack_weights=pack)
    drafter, _ = load_drafter_for_timing(args.drafter, target, pack)
    lookup_tokens = int(drafter.generation_config.prompt_lookup_num_tokens or 10)
    seconds: dict[str, float] = collections.defaultdict(float)
    accepted: collections.Counter = collections.Counter()
    sizes: collections.Counter = collections.Counter()
    root_ranks = {"all": collections.Counter(), "accepted_nothing": collections.Counter()}
    _timed(seconds, accepted, sizes, root_ranks)

    prompts = load_prompts(args.prompts, categories=args.categories, limit=args.limit)
    encoded = [encode_chat(tokenizer, [{"role": "user", "content": item.turns[0]}]) for item in prompts]

    def generate(input_ids: torch.Tensor, **kwargs) -> tuple[torch.Tensor, float]:
        start = time.perf_counter()
        output = target.generate(input_ids, max_new_tokens=args.max_new_tokens, do_sample=False, **kwargs)
        return output[0, input_ids.shape[1] :], time.perf_counter() - start

    report = {"prompt_set": args.prompts, "prompts": len(encoded), "dtype": args.dtype, "runs": []}
    generate(encoded[0])  # warm-up
    for label in args.settings or ["shipped"]:
        tree = {"custom_generate": coral_hf.tree_generate, "drafter": drafter}
        if label != "shipped":
            total, depth, top_k = (int(part) for part in label.split(","))
            tree.update(tree_total_tokens=total, tree_depth=depth, tree_top_k=top_k)
        generate(encoded[0], **tree)
        for counter in (seconds, accepted, sizes, *root_ranks.values()):
            counter.clear()
        totals = collections.Counter()
        for input_ids in encoded:
            plain, plain_seconds = generate(input_ids)
            output, tree_seconds = generate(input_ids, **tree)
            lookup, lookup_seconds = generate(input_ids, prompt_lookup_num_tokens=lookup_tokens)
            if not torch.equal(plain, output):
                # bf16 outputs may part at numerical ties (`coral-hf bench` classifies them); fp32 must match.
                if not is_low_precision(target.dtype):
                    raise SystemExit("error: tree decoding changed the output; profile a lossless configuration.")
                totals.update(differing_outputs=1)
            totals.update(drafter.last_generation_stats)
            totals.update(tokens=len(plain), tree_tokens=len(output), lookup_tokens=len(lookup))
            for name, value in (("plain", plain_seconds), ("tree", tree_seconds), ("lookup", lookup_seconds)):
                totals[name] += value
        step = totals["plain"] / totals["tokens"]
        rounds = totals["rounds"]
        per_round = {name: round(seconds[name] / rounds / step, 3) for name in PHASES}
        per_round["rest"] = round((totals["tree"] - sum(seconds.values())) / rounds / step, 3)
        run = {
            "tree": label,
            "tokens": totals["tokens"],
            "plain_ms_per_token": round(step * 1000, 2),
            "speedup_tree": round(step / (totals["tree"] / totals["tree_tokens"]), 3),
            "speedup_prompt_lookup": round(step / (totals["lookup"] / totals["lookup_tokens"]), 3),
            "tau": round(totals["tree_tokens"] / (rounds + len(encoded)), 3),
            "differing_outputs": totals["differing_outputs"],
            "rounds": rounds,
            "copy_only_rounds": totals["copy_only_rounds"],
            "drafter_forwards_per_round": round(totals["drafter_forwards"] / rounds, 2),
            "round_cost_in_plain_steps": per_round,
            "accepted_per_round": dict(sorted(accepted.items())),
            "tree_sizes": dict(sorted(sizes.items())),
            "root_rank_of_target_token": {
                rounds: {label: counter[label] for _, label in (*RANK_BUCKETS, (0, ">16"))}
                for rounds, counter in root_ranks.items()
            },
        }
        report["runs"].append(run)
        print(json.dumps(run))
    report["machine"] = machine_info(torch.device("cpu"))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
