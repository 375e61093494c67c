"""`coral-hf` sub-commands: each module registers one sub-command (see `coral_hf.cli`)."""

from __future__ import annotations

import argparse
import sys

EXIT_ERROR = 2  # an expected failure (bad input, missing or corrupt files, no network), as `coral_hf.cli` returns
_PACK_WEIGHTS = {"auto": "auto", "on": True, "off": False}


def fail(message: str) -> int:
    """Print one `error:` line and return the exit status of an expected failure.

    Library errors may add details after a blank line (the underlying exception); the command line shows only what
    comes before it, on one line.
    """
    first_paragraph = message.split("\n\n")[0]
    print(f"error: {' '.join(first_paragraph.split())}", file=sys.stderr)
    return EXIT_ERROR


def add_pack_weights_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """`--pack-weights auto|on|off`, for the commands and scripts that time generation."""
    parser.add_argument(
        "--pack-weights",
        default="auto",
        choices=tuple(_PACK_WEIGHTS),
        help="oneDNN-packed linear weights for target and drafter (coral_hf.pack_linear_weights), which make a "
        "forward over several new tokens cost about one token's on CPU; plain generate uses them too (default "
        "auto: on CPU where PyTorch can).",
    )


def resolve_pack_weights_argument(choice: str, device: str | None = None) -> tuple[bool, str]:
    """The `--pack-weights` choice as (whether to pack, `"yes (why)"` / `"no (why)"` for reports and logs)."""
    from ..targets import resolve_pack_weights

    pack, reason = resolve_pack_weights(_PACK_WEIGHTS[choice], device)
    return pack, f"{'yes' if pack else 'no'} ({reason})"
