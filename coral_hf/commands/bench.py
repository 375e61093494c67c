"""`coral-hf bench`: tokens/s, speedup, acceptance (tau) and a lossless check of a drafter on a prompt set."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from . import (
    add_drafter_dtype_argument,
    add_pack_weights_argument,
    fail,
    resolve_drafter_dtype_argument,
    resolve_pack_weights_argument,
)

_EPILOG = """\
examples:
  coral-hf bench                                            # shipped drafter, held-out ShareGPT prompts
  coral-hf bench --drafter random --prompts humaneval --limit 3 --max-new-tokens 48
  coral-hf bench --prompts mtbench --categories coding writing --limit 5 --json bench.json --report bench-report
  coral-hf bench --target ./my-target --drafter ./my-drafter --prompts questions.jsonl --temperature 0.7

Every prompt turn is generated with plain generate(), with assistant_model=drafter, with transformers'
prompt-lookup decoding and with the hybrid (the drafter plus prompt-lookup copies), interleaved in rotating
order after warm-up, in one process. tok/s and speedup are
medians over prompts; tau is generated tokens per target forward (accepted draft tokens + the target's own).
Greedy runs (the default) also check that every assisted output is token-identical to plain decoding.
The machine is what it is: compare ratios from one run, not absolute tokens/s from different runs.
See docs/benchmark.md.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `bench` sub-command."""
    parser = subparsers.add_parser(
        "bench",
        help="Benchmark a drafter: tokens/s, speedup, tau and a lossless check against plain generate().",
        description=(
            "Measure a drafter on a prompt set against plain generate() and prompt-lookup decoding: tokens/s per "
            "prompt and category, speedup, acceptance length tau with its histogram, and (greedy) a token-by-token "
            "lossless check."
        ),
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    models = parser.add_argument_group("models")
    models.add_argument(
        "--target",
        default="smollm2-135m-instruct",
        metavar="NAME_OR_PATH",
        help="Target: `smollm2-135m-instruct` (embedded, default), a Hub id or a local path.",
    )
    models.add_argument(
        "--drafter",
        metavar="PATH_OR_ID",
        help="Drafter directory or Hub id; `random` = an untrained drafter (seeded by --seed), the "
        "overhead floor. Default: the drafter shipped for the target.",
    )
    models.add_argument(
        "--drafter-head",
        choices=("full", "router", "shortlist"),
        help="LM head the drafter drafts with: the full head, the CORAL router over vocabulary "
        "groups, or a static frequency shortlist; the latter two need a drafter with a grouped head "
        "(default: the drafter's own setting).",
    )
    models.add_argument(
        "--draft-length",
        type=int,
        metavar="K",
        help="Draft tokens per round (overrides the drafter generation_config.num_assistant_tokens).",
    )
    models.add_argument(
        "--confidence-threshold",
        type=float,
        metavar="P",
        help="Chain: stop a round's drafting once the drafter's probability of its token is below P (overrides "
        "generation_config.assistant_confidence_threshold; 0 drafts every round to the draft length).",
    )
    models.add_argument("--device", default="cpu", help="Device of target and drafter (default: cpu).")
    models.add_argument(
        "--dtype",
        default="float32",
        choices=("float32", "bfloat16", "float16", "auto"),
        help="Target dtype (default float32, which keeps the greedy comparison exact; auto: "
        "bfloat16 where the device has native bf16, e.g. CPU flags amx_bf16 / avx512_bf16). In "
        "bf16, divergences at numerical ties are reported apart from true ones.",
    )
    add_pack_weights_argument(models)
    add_drafter_dtype_argument(models)

    prompts = parser.add_argument_group("prompts")
    prompts.add_argument(
        "--prompts",
        default="sharegpt-heldout",
        metavar="SET_OR_JSONL",
        help="`sharegpt-heldout` (default), `humaneval`, `mtbench`, `followeval`, or an MT-bench / "
        "Spec-Bench style JSONL file (question_id, category, turns).",
    )
    prompts.add_argument("--categories", nargs="+", metavar="NAME", help="Only these categories.")
    prompts.add_argument("--limit", type=int, metavar="N", help="At most N prompts per category (file order).")

    generation = parser.add_argument_group("generation")
    generation.add_argument("--max-new-tokens", type=int, default=128, help="Tokens per turn (default: 128).")
    generation.add_argument(
        "--temperature",
        type=float,
        default=0.0,
        help="0 (default): greedy, with the lossless check. > 0: pure temperature sampling "
        "(speculative sampling keeps the target distribution; outputs are not compared).",
    )
    generation.add_argument(
        "--prompt-lookup-tokens",
        type=int,
        default=10,
        metavar="N",
        help="prompt_lookup_num_tokens of the prompt-lookup baseline (default: 10: copied spans "
        "cost nothing to propose, only verification width; n-gram size 2).",
    )
    generation.add_argument("--no-prompt-lookup", action="store_true", help="Skip the prompt-lookup baseline.")
    generation.add_argument(
        "--hybrid-tokens",
        type=int,
        metavar="N",
        help="Also run the hybrid mode: the drafter plus prompt-lookup copies of up to N tokens "
        "(capped by the draft length) where the copy is the likelier candidate (default: the "
        "draft length; 0 skips the mode).",
    )
    generation.add_argument(
        "--copy-only-after",
        type=int,
        metavar="N",
        help="Hybrid modes: after N consecutive fully accepted copies, a round that finds a copy proposes it "
        "without a drafter forward; 0 always drafts too (default: the drafter's copy_only_after).",
    )
    generation.add_argument(
        "--copy-only-tokens",
        type=int,
        metavar="N",
        help="Hybrid modes: most tokens a copy-only round proposes (default: the drafter's copy_only_tokens, "
        "else the copy length).",
    )
    generation.add_argument(
        "--decoding",
        default="chain",
        choices=("chain", "tree", "chain,tree"),
        metavar="{chain|tree|chain,tree}",
        help="chain (default): the drafter drafts one chain per round (assisted decoding). tree or chain,tree: "
        "also decode with the drafter's dynamic draft tree (`coral_hf.tree_generate`; the `tree` mode, and "
        "`tree_hybrid` with a prompt-lookup branch when the hybrid mode runs), side by side with the chain.",
    )
    generation.add_argument("--tree-total-tokens", type=int, metavar="N", help="Tree: tokens verified per round.")
    generation.add_argument("--tree-depth", type=int, metavar="D", help="Tree: levels below the root.")
    generation.add_argument("--tree-top-k", type=int, metavar="K", help="Tree: children per expanded node.")
    generation.add_argument(
        "--tree-unmatched-copy-tokens",
        type=int,
        metavar="N",
        help="Tree with copies: longest copy branch when the copy does not start with the drafter's top-1 (0: "
        "drop such copies; default: the drafter's tree_unmatched_copy_tokens).",
    )
    generation.add_argument(
        "--tree-confidence-threshold",
        type=float,
        metavar="P",
        help="Tree: expand a level only while its likeliest node's path probability is >= P (0: always all levels).",
    )
    generation.add_argument(
        "--no-datastore",
        action="store_true",
        help="Hybrid chain and tree with copies: leave out the drafter's datastore proposals (coral-hf datastore), "
        "to measure what they add; the drafter alone (chain, tree) never uses them.",
    )
    generation.add_argument("--seed", type=int, default=0, help="Seed for sampling and for `--drafter random`.")

    measurement = parser.add_argument_group("measurement and output")
    measurement.add_argument(
        "--warmup",
        type=int,
        default=1,
        metavar="N",
        help="Untimed warm-up generations per mode before measuring (default: 1).",
    )
    measurement.add_argument(
        "--repeats",
        type=int,
        default=1,
        metavar="N",
        help="Time every mode N times per turn, interleaved, and keep the median call: steadier speedups on a "
        "noisy machine, for N times the run time (default: 1).",
    )
    measurement.add_argument(
        "--draft-step-repetitions",
        type=int,
        default=100,
        metavar="N",
        help="Timed single draft steps after the generations, for the draft_step_ms / layer_ms "
        "/ lm_head_ms medians (default: 100; 0 skips).",
    )
    measurement.add_argument(
        "--threads",
        type=int,
        metavar="N",
        help="torch.set_num_threads(N) (default: torch's choice; recorded either way).",
    )
    measurement.add_argument("--json", type=Path, metavar="PATH", help="Write the full results as JSON.")
    measurement.add_argument("--report", type=Path, metavar="DIR", help="Write report.md and PNG plots into DIR.")
    measurement.add_argument("--no-progress", action="store_true", help="No progress bar.")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from coral_hf import CoralDrafter, load_drafter, load_target
    from coral_hf.eval.bench import followeval_summary, run_bench
    from coral_hf.eval.prompts import load_prompts
    from coral_hf.eval.report import format_table, write_report
    from coral_hf.loading import shipped_drafter_path
    from coral_hf.tree_decoding import TREE_SETTINGS

    if args.hybrid_tokens is not None and args.hybrid_tokens < 0:
        return fail(f"--hybrid-tokens must be >= 0, got {args.hybrid_tokens}")
    for name in ("copy_only_after", "tree_unmatched_copy_tokens"):
        value = getattr(args, name)
        if value is not None and value < 0:
            return fail(f"--{name.replace('_', '-')} must be >= 0, got {value}")
    if args.copy_only_tokens is not None and args.copy_only_tokens < 1:
        return fail(f"--copy-only-tokens must be >= 1, got {args.copy_only_tokens}")
    for name in (
        "max_new_tokens",
        "draft_length",
        "prompt_lookup_tokens",
        "tree_total_tokens",
        "tree_depth",
        "tree_top_k",
        "repeats",
    ):
        value = getattr(args, name)
        if value is not None and value < 1:
            return fail(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    if args.confidence_threshold is not None and not 0 <= args.confidence_threshold <= 1:
        return fail(f"--confidence-threshold must be in [0, 1], got {args.confidence_threshold}")
    if args.tree_confidence_threshold is not None and not 0 <= args.tree_confidence_threshold <= 1:
        return fail(f"--tree-confidence-threshold must be in [0, 1], got {args.tree_confidence_threshold}")
    if args.temperature < 0:
        return fail(f"--temperature must be >= 0, got {args.temperature}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        prompts = load_prompts(args.prompts, limit=args.limit, categories=args.categories)
    except (ValueError, FileNotFoundError) as error:
        return fail(str(error))
    if not prompts:
        return fail(f"no prompts selected from {args.prompts!r}")

    from coral_hf.packed_linear import pack_linear_weights
    from coral_hf.targets import resolve_dtype

    dtype, dtype_reason = resolve_dtype(args.dtype, args.device)
    pack, packed_label = resolve_pack_weights_argument(args.pack_weights, args.device, dtype)
    target, tokenizer = load_target(args.target, dtype=dtype, device=args.device, pack_weights=pack)
    drafter_source = args.drafter or shipped_drafter_path(args.target)
    if drafter_source is None:
        return fail(
            f"no drafter ships for target {args.target!r}: pass --drafter PATH_OR_HUB_ID "
            "(or --drafter random for the untrained overhead floor)"
        )
    drafter_dtype, drafter_dtype_label = resolve_drafter_dtype_argument(args.drafter_dtype, dtype, args.device)
    is_random = str(drafter_source) == "random"
    if is_random:
        torch.manual_seed(args.seed)
        drafter = CoralDrafter.from_target(target, dtype=drafter_dtype)
        drafter_label = f"random (untrained, seed {args.seed})"
    else:
        drafter = load_drafter(str(drafter_source), target=target, dtype=drafter_dtype)
        drafter_label = str(drafter_source)
    if args.drafter_head is not None:
        try:
            drafter.set_head_mode(args.drafter_head)
        except ValueError as error:
            return fail(str(error))
    if pack:
        pack_linear_weights(drafter)

    result = run_bench(
        target,
        tokenizer,
        drafter,
        prompts,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        warmup=args.warmup,
        repeats=args.repeats,
        prompt_lookup_tokens=None if args.no_prompt_lookup else args.prompt_lookup_tokens,
        hybrid_tokens=(args.hybrid_tokens or None)
        if args.hybrid_tokens is not None
        else (args.draft_length or drafter.generation_config.num_assistant_tokens),
        draft_length=args.draft_length,
        confidence_threshold=args.confidence_threshold,
        copy_only_after=args.copy_only_after,
        copy_only_tokens=args.copy_only_tokens,
        decoding=("chain", "tree") if "tree" in args.decoding else ("chain",),
        tree_overrides={name: getattr(args, name) for name in TREE_SETTINGS if getattr(args, name) is not None},
        datastore=not args.no_datastore,
        seed=args.seed,
        progress=not args.no_progress,
        draft_step_repetitions=args.draft_step_repetitions,
        metadata={
            "target": args.target,
            "drafter": drafter_label,
            "drafter_is_random": is_random,
            "prompts": args.prompts,
            "categories": args.categories,
            "limit": args.limit,
            "dtype_choice": f"{str(dtype).removeprefix('torch.')} ({dtype_reason})",
            "packed_weights": packed_label,
            "drafter_dtype": drafter_dtype_label,
        },
    )
    if args.prompts == "followeval":
        result.followeval = followeval_summary(result)

    summary = result.summary()  # once: its bootstrap intervals resample every mode and category
    print(format_table(result, summary))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"JSON: {args.json}")
    if args.report is not None:
        print(f"report: {write_report(result, args.report, summary)}")
    return 0
