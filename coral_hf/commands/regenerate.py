"""`coral-hf regenerate`: rewrite a chat dataset's assistant turns with the target (data the target wrote itself)."""

from __future__ import annotations

import argparse
from pathlib import Path

_EPILOG = """\
examples:
  # SmolLM2 answers 2000 ShareGPT conversations (first turn only), greedy, bf16 where the CPU has native bf16
  coral-hf regenerate --max-samples 2000 --max-turns 1 --max-prompt-tokens 320 --output regen.jsonl
  # then train on it (or on a mix: concatenate the JSONL files)
  coral-hf train --data regen.jsonl --output-dir ./drafter

Rerun the same command after an interruption: finished conversations (by id) are skipped.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `regenerate` sub-command."""
    parser = subparsers.add_parser(
        "regenerate",
        help="Regenerate a chat dataset's assistant turns with the target (resumable JSONL).",
        description="Replace every assistant turn of chat conversations by the target's own answer and write "
        "JSONL {id, messages} records that `coral-hf train --data` reads.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--target", default="smollm2-135m-instruct", help="Target name, Hub id or local path.")
    parser.add_argument("--data", default="sharegpt", help="'sharegpt' or a local JSON / JSONL chat file.")
    parser.add_argument("--output", type=Path, required=True, help="JSONL file to append to (resumable).")
    parser.add_argument("--max-samples", type=int, help="Use the first N conversations only.")
    parser.add_argument("--max-turns", type=int, help="Regenerate at most N assistant turns per conversation.")
    parser.add_argument(
        "--max-prompt-tokens",
        type=int,
        help="Skip conversations whose first prompt is longer than N tokens (default: keep all).",
    )
    parser.add_argument(
        "--min-turns",
        type=int,
        help="Skip conversations with fewer user turns (e.g. 2 with --max-turns 2: add second turns only).",
    )
    parser.add_argument("--batch-size", type=int, default=16, help="Conversations per generate call (default 16).")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="Tokens per answer (default 256).")
    parser.add_argument("--temperature", type=float, default=0.0, help="0: greedy (default); > 0: sampled.")
    parser.add_argument("--top-p", type=float, default=1.0, help="Nucleus sampling with --temperature > 0.")
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=("auto", "float32", "bfloat16"),
        help="Target dtype (default auto: bf16 where the device has native bf16).",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..targets import load_target, resolve_dtype
    from ..training.data import load_conversations
    from ..training.regenerate import regenerate_conversations

    if args.batch_size < 1 or args.max_new_tokens < 1:
        raise ValueError("--batch-size and --max-new-tokens must be >= 1")
    dtype, reason = resolve_dtype(args.dtype, args.device)
    target, tokenizer = load_target(args.target, dtype=dtype, device=args.device)
    conversations = load_conversations(args.data, max_samples=args.max_samples)
    print(f"Regenerating {len(conversations)} conversations with {args.target} ({dtype}, {reason}) into {args.output}")
    written = regenerate_conversations(
        target,
        tokenizer,
        conversations,
        args.output,
        batch_size=args.batch_size,
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_p=args.top_p,
        max_turns=args.max_turns,
        max_prompt_tokens=args.max_prompt_tokens,
        min_turns=args.min_turns,
        seed=args.seed,
        progress=not args.no_progress,
    )
    print(f"{written} conversations written ({len(conversations) - written} were already done).")
    return 0
