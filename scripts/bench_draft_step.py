"""Measure CORAL's lighter drafter on SmolLM2-135M-Instruct: draft-step time and vocabulary-group coverage.

Timing: one draft step (drafter layer + head) with the full LM head, the routed head for several (G, k) and the
static frequency shortlist, interleaved in one run after warm-up (`coral_hf.lm_head.compare_draft_steps`). Untrained
drafters suffice: the cost does not depend on the weights.

Coverage, on ShareGPT conversations tokenised with the target's chat template (assistant tokens only):
- token counts from the training split give the `frequency` permutation, the shortlist and the routers' prior;
- the target's own features and distributions on held-out conversations give, per strategy / G / k:
  * oracle: the k groups of most target mass (an upper bound for any router),
  * prior: the untrained router (the k groups of most *training* mass: a static choice),
  * trained: a router trained on the target's features of training conversations (the router stage, with the
    target's true next feature standing in for a perfect drafter's prediction), with soft labels (target mass per
    group), and with hard labels (group of the target's top-1) for G = 64;
- the static shortlist with the same number of rows as k groups (FR-Spec / EAGLE-3 baseline).
Coverage is `top1` (target argmax inside the active tokens: the greedy acceptance bound) and `mass` (target
probability inside them: the sampling acceptance bound).

    python scripts/bench_draft_step.py --threads 1 --output-dir outputs/draft_step

Writes `draft_step.json` and `draft_step.md` to the output directory.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

import coral_hf
from coral_hf import CoralDrafter
from coral_hf.eval.timing import compare_draft_steps
from coral_hf.lm_head import (
    GroupedLMHead,
    frequency_shortlist,
    shortlist_coverage,
    token_frequencies,
)
from coral_hf.training import build_training_dataset, load_conversations, split_conversations
from coral_hf.training.router import freeze_for_router_stage, router_loss

STRATEGIES = ("contiguous", "frequency", "cluster")
# (G, k) pairs: a routed step multiplies k / G of the LM head (1/8, then 1/16).
GROUPINGS = ((32, 4), (64, 8), (128, 16), (256, 32), (32, 2), (64, 4), (128, 8), (256, 16))
HARD_LABEL_GROUPS = (64,)  # routers are trained with soft labels; hard labels too for these G, for comparison


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------- timing


def measure_timing(target: torch.nn.Module, args: argparse.Namespace) -> dict[str, Any]:
    vocab_size = target.config.vocab_size
    drafters = {
        num_groups: CoralDrafter.from_target(target, head_mode="router", num_groups=num_groups, active_groups=k)
        for num_groups, k in ((32, 4), (64, 8), (128, 16), (256, 16))
    }
    with torch.no_grad():  # an untrained router scores every feature alike; a random one varies its groups per step
        for drafter in drafters.values():
            drafter.grouped_head.router.w2.weight.normal_(std=0.02, generator=torch.Generator().manual_seed(0))
    variants: dict[str, tuple[CoralDrafter, dict[str, Any]]] = {"full": (drafters[64], {"mode": "full"})}
    for num_groups, k in GROUPINGS:
        variants[f"router G={num_groups} k={k}"] = (drafters[num_groups], {"mode": "router", "active_groups": k})
    for num_groups in (64, 256):  # default shortlist sizes: V/8 and V/16 rows
        drafter = drafters[num_groups]
        variants[f"shortlist N={drafter.config.shortlist_size}"] = (drafter, {"mode": "shortlist"})
    log(f"timing {len(variants)} variants x {args.repetitions} repetitions")
    timings = compare_draft_steps(
        variants, context_length=args.context_length, repetitions=args.repetitions, warmup=args.warmup
    )
    full = timings["full"]
    rows = []
    for name, timing in timings.items():
        drafter, settings = variants[name]
        mode = settings["mode"]
        if mode == "router":
            head_rows = vocab_size * settings["active_groups"] // drafter.config.num_groups
        elif mode == "shortlist":
            head_rows = drafter.config.shortlist_size
        else:
            head_rows = vocab_size
        rows.append(
            {
                "variant": name,
                "head_rows": head_rows,
                **{key: round(value, 4) for key, value in timing.items()},
                "step_speedup": round(full["draft_step_ms"] / timing["draft_step_ms"], 2),
                "head_speedup": round(full["lm_head_ms"] / timing["lm_head_ms"], 2),
            }
        )
    return {"context_length": args.context_length, "repetitions": args.repetitions, "rows": rows}


# ---------------------------------------------------------------------------------------------- coverage


@torch.no_grad()
def extract(target, dataset, heads: dict[tuple[str, int], GroupedLMHead], shortlists: dict[int, torch.Tensor]):
    """Per assistant position: target feature, top-1 token and mass per group of every grouping; shortlist coverage.

    The feature at position p is the target's prediction of token p + 1: positions where that token is an
    assistant token count.
    """
    features, top1, masses = [], [], {key: [] for key in heads}
    shortlist_sums = {size: {"top1": 0.0, "mass": 0.0} for size in shortlists}
    for index, example in enumerate(dataset):
        positions = torch.tensor(example["loss_mask"][1:]).bool()
        hidden = target.model(torch.tensor(example["input_ids"])[None]).last_hidden_state[0, :-1][positions]
        probs = target.lm_head(hidden).float().softmax(-1)
        features.append(hidden)
        top1.append(probs.argmax(-1))
        for key, head in heads.items():
            masses[key].append(head.group_mass(probs))
        for size, shortlist in shortlists.items():
            for name, value in shortlist_coverage(probs, shortlist).items():
                shortlist_sums[size][name] += value * probs.shape[0]
        if (index + 1) % 10 == 0:
            log(f"  {index + 1}/{len(dataset)} conversations")
    num_positions = sum(len(value) for value in top1)
    return (
        torch.cat(features),
        torch.cat(top1),
        {key: torch.cat(value) for key, value in masses.items()},
        {size: {name: total / num_positions for name, total in sums.items()} for size, sums in shortlist_sums.items()},
    )


def _covered(scores: torch.Tensor, group_mass: torch.Tensor, labels: torch.Tensor, k: int) -> dict[str, float]:
    chosen = scores.topk(k, dim=-1).indices
    return {
        "top1": (chosen == labels[:, None]).any(-1).float().mean().item(),
        "mass": group_mass.gather(-1, chosen).sum(-1).mean().item(),
    }


def train_router(drafter, features, top1, group_mass, args) -> None:
    """The router stage on cached target features (the target's next feature stands in for the drafter's)."""
    parameters = freeze_for_router_stage(drafter)
    optimizer = torch.optim.AdamW(parameters, lr=args.router_lr, betas=(0.9, 0.95))
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, args.router_steps)
    generator = torch.Generator().manual_seed(0)
    for _ in range(args.router_steps):
        batch = torch.randint(features.shape[0], (args.router_batch,), generator=generator)
        loss, _ = router_loss(
            drafter,
            features[batch],
            top1[batch],
            torch.ones(args.router_batch),
            target_group_mass=None if group_mass is None else group_mass[batch],
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        scheduler.step()


def measure_coverage(target, tokenizer, args: argparse.Namespace) -> dict[str, Any]:
    vocab_size = target.config.vocab_size
    conversations = load_conversations("sharegpt", max_samples=args.count_conversations)
    train, heldout = split_conversations(conversations)
    log(f"{len(train)} training / {len(heldout)} held-out conversations; counting assistant tokens")
    train_set = build_training_dataset(tokenizer, train, max_length=args.max_length)
    counts = token_frequencies(train_set["input_ids"], vocab_size, train_set["loss_mask"])

    drafters = {}
    for strategy in STRATEGIES:
        for num_groups in sorted({g for g, _ in GROUPINGS}):
            drafters[strategy, num_groups] = CoralDrafter.from_target(
                target, num_groups=num_groups, group_strategy=strategy, token_counts=counts
            )
    heads = {key: drafter.grouped_head for key, drafter in drafters.items()}
    shortlist_sizes = sorted({vocab_size * k // g for g, k in GROUPINGS})
    shortlists = {size: frequency_shortlist(counts, size) for size in shortlist_sizes}

    log(f"target features: {args.router_train_conversations} training conversations")
    router_set = train_set.select(range(min(args.router_train_conversations, len(train_set))))
    train_features, train_top1, train_mass, _ = extract(target, router_set, heads, shortlists)
    heldout_set = build_training_dataset(tokenizer, heldout[: args.eval_conversations], max_length=args.max_length)
    log(f"target features: {len(heldout_set)} held-out conversations")
    eval_features, eval_top1, eval_mass, shortlist_result = extract(target, heldout_set, heads, shortlists)

    rows = []
    for (strategy, num_groups), drafter in drafters.items():
        router = drafter.grouped_head.router
        initial = {name: value.clone() for name, value in router.state_dict().items()}
        with torch.no_grad():
            scores = {"prior": router(eval_features)}
        for label in ("soft", "hard") if num_groups in HARD_LABEL_GROUPS else ("soft",):
            log(f"router stage: {strategy} G={num_groups}, {label} labels")
            router.load_state_dict(initial)
            group_mass = train_mass[strategy, num_groups] if label == "soft" else None
            train_router(drafter, train_features, train_top1, group_mass, args)
            with torch.no_grad():
                scores[f"trained_{label}"] = router(eval_features)
        labels = drafter.grouped_head.group_of_token()[eval_top1]
        mass = eval_mass[strategy, num_groups]
        for k in [k for g, k in GROUPINGS if g == num_groups]:
            row = {"strategy": strategy, "G": num_groups, "k": k, "shortlist_size": vocab_size * k // num_groups}
            row["oracle"] = _covered(mass, mass, labels, k)
            row.update({name: _covered(value, mass, labels, k) for name, value in scores.items()})
            rows.append(row)
    return {
        "train_conversations_counted": len(train_set),
        "router_train_positions": int(train_features.shape[0]),
        "eval_positions": int(eval_features.shape[0]),
        "rows": rows,
        "shortlist": {str(size): result for size, result in shortlist_result.items()},
    }


# ---------------------------------------------------------------------------------------------- report


def _pct(value: float) -> str:
    return f"{100 * value:.1f}"


def markdown(report: dict[str, Any]) -> str:
    lines = ["# Draft step and vocabulary-group coverage: SmolLM2-135M-Instruct", ""]
    lines.append(f"Machine: {report['machine']}")
    lines.append("")
    if "timing" in report:
        timing = report["timing"]
        lines += [
            f"## Draft step (median of {timing['repetitions']} interleaved repetitions, "
            f"{timing['context_length']} cached positions)",
            "",
            "| variant | head rows | draft step ms | layer ms | LM head ms | step speedup | head speedup |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for row in timing["rows"]:
            lines.append(
                f"| {row['variant']} | {row['head_rows']} | {row['draft_step_ms']:.2f} | {row['layer_ms']:.2f} | "
                f"{row['lm_head_ms']:.2f} | {row['step_speedup']:.2f}x | {row['head_speedup']:.2f}x |"
            )
        lines.append("")
    if "coverage" in report:
        coverage = report["coverage"]
        lines += [
            f"## Coverage on held-out ShareGPT ({coverage['eval_positions']} assistant positions; routers trained "
            f"on {coverage['router_train_positions']} positions)",
            "",
            "top-1 / mass coverage in %: oracle (best k groups by target mass), prior (untrained router: the k groups "
            "of most training-token mass), trained (router stage, soft labels; hard labels where given), and the "
            "frequency shortlist with the same number of rows.",
            "",
            "| strategy | G | k | oracle | prior | trained (soft) | trained (hard) | shortlist (same rows) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for row in coverage["rows"]:
            cells = [row["oracle"], row["prior"], row["trained_soft"], row.get("trained_hard")]
            shortlist = coverage["shortlist"][str(row["shortlist_size"])]
            text = [f"{_pct(c['top1'])} / {_pct(c['mass'])}" if c else "-" for c in cells + [shortlist]]
            lines.append(f"| {row['strategy']} | {row['G']} | {row['k']} | " + " | ".join(text) + " |")
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (1 is steadiest on shared CPUs)")
    parser.add_argument("--context-length", type=int, default=256)
    parser.add_argument("--repetitions", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--skip-timing", action="store_true")
    parser.add_argument("--skip-coverage", action="store_true")
    parser.add_argument("--count-conversations", type=int, default=3000, help="ShareGPT records to load and count")
    parser.add_argument("--router-train-conversations", type=int, default=150)
    parser.add_argument("--eval-conversations", type=int, default=40)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--router-steps", type=int, default=600)
    parser.add_argument("--router-batch", type=int, default=512)
    parser.add_argument("--router-lr", type=float, default=1e-3)
    parser.add_argument("--output-dir", type=Path, default=Path("outputs/draft_step"))
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    target, tokenizer = coral_hf.load_target("smollm2-135m-instruct")
    report: dict[str, Any] = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"torch {torch.__version__} with {torch.get_num_threads()} thread(s)",
        "args": {key: str(value) for key, value in vars(args).items()},
    }
    if not args.skip_timing:
        report["timing"] = measure_timing(target, args)
    if not args.skip_coverage:
        report["coverage"] = measure_coverage(target, tokenizer, args)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    (args.output_dir / "draft_step.json").write_text(json.dumps(report, indent=2))
    (args.output_dir / "draft_step.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
