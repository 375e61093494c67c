"""`coral-hf datastore`: index the target's own answers so tree decoding can propose their continuations."""

from __future__ import annotations

import argparse
from pathlib import Path

_EPILOG = """\
examples:
  # the target's answers (coral-hf regenerate) become the datastore of a trained drafter
  coral-hf datastore --drafter ./drafter --data regen-chat.jsonl regen-code.jsonl.gz
  # then tree decoding proposes their continuations as one more branch
  target.generate(**inputs, custom_generate=coral_hf.tree_generate, drafter=load_drafter("./drafter", target))

Conversations in the held-out split (the one `coral-hf train` holds out and `--prompts sharegpt-heldout`
benchmarks) are left out, so benchmarks on it stay unseen; --keep-heldout includes them.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `datastore` sub-command."""
    parser = subparsers.add_parser(
        "datastore",
        help="Index the target's own answers as a drafter's datastore (datastore.safetensors).",
        description="Tokenize the assistant turns of chat files (ideally the target's own answers, from `coral-hf "
        "regenerate`) and write them, indexed by the n-grams that end at each token, as datastore.safetensors in "
        "the drafter's directory. Tree decoding then adds the usual continuation of the context's longest suffix "
        "found there as one more branch (lossless: the target verifies it).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--drafter", type=Path, required=True, help="Drafter directory to write the datastore into.")
    parser.add_argument(
        "--data", nargs="+", required=True, help="Chat files (JSON / JSONL, optionally .gz) or 'sharegpt'."
    )
    parser.add_argument(
        "--max-ngram", type=int, default=8, help="Longest context suffix matched (default 8; 8 bytes per token)."
    )
    parser.add_argument("--keep-heldout", action="store_true", help="Also index conversations of the held-out split.")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from transformers import AutoTokenizer

    from ..configuration_coral import CoralConfig
    from ..datastore import DATASTORE_FILE, build_datastore
    from ..targets import DEFAULT_TARGET_HUB_ID, target_path
    from ..training.data import load_conversations, split_conversations

    if args.max_ngram < 1:
        raise ValueError(f"--max-ngram must be >= 1, got {args.max_ngram}")
    if not (args.drafter / "config.json").is_file():
        raise FileNotFoundError(f"{args.drafter} is not a drafter directory: no config.json.")
    config = CoralConfig.from_pretrained(args.drafter)
    target = config.target_name_or_path or DEFAULT_TARGET_HUB_ID
    tokenizer = AutoTokenizer.from_pretrained(target_path(target))
    conversations, held_out = [], 0
    for source in args.data:
        loaded = load_conversations(source)
        kept = loaded if args.keep_heldout else split_conversations(loaded)[0]
        held_out += len(loaded) - len(kept)
        conversations.extend(kept)
    names = ", ".join(Path(source).name for source in args.data)
    datastore = build_datastore(conversations, tokenizer, max_ngram=args.max_ngram, source=names)
    output = args.drafter / DATASTORE_FILE
    datastore.save(output)
    print(
        f"Wrote {output}: {len(datastore):,} tokens of {len(conversations):,} conversations"
        + (f" ({held_out:,} held-out conversations left out)" if held_out else "")
        + f", {output.stat().st_size / 2**20:.1f} MiB."
    )
    return 0
