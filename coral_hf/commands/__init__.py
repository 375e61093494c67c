"""`coral-hf` sub-commands: each module registers one sub-command (see `coral_hf.cli`)."""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from ..modeling_coral import CoralDrafter

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
        "auto: on CPU where PyTorch can; bf16 weights only where oneDNN has bf16 kernels, i.e. with AVX-512).",
    )


def resolve_pack_weights_argument(
    choice: str, device: str | None = None, dtype: torch.dtype | None = None
) -> tuple[bool, str]:
    """The `--pack-weights` choice for a target of `dtype` as (whether to pack, `"yes (why)"` / `"no (why)"` for
    reports and logs)."""
    from ..targets import resolve_pack_weights

    pack, reason = resolve_pack_weights(_PACK_WEIGHTS[choice], device, dtype)
    return pack, f"{'yes' if pack else 'no'} ({reason})"


def add_drafter_dtype_argument(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """`--drafter-dtype auto|target|float32|bfloat16`, for the commands and scripts that load a drafter."""
    parser.add_argument(
        "--drafter-dtype",
        default="auto",
        choices=("auto", "target", "float32", "bfloat16"),
        help="dtype the drafter runs in (default auto: bfloat16 next to a float32 target where the device has "
        "native bf16, else the target's). The target verifies every proposal, so the drafter's precision changes "
        "acceptance at most, never the output; a bf16 draft step reads half the bytes.",
    )


def resolve_drafter_dtype_argument(
    choice: str, target_dtype: torch.dtype, device: str | None = None
) -> tuple[torch.dtype, str]:
    """The `--drafter-dtype` choice as (dtype, `"bfloat16 (why)"` for reports and logs)."""
    from ..targets import resolve_drafter_dtype

    dtype, reason = resolve_drafter_dtype(choice, target_dtype, device)
    return dtype, f"{str(dtype).removeprefix('torch.')} ({reason})"


def load_drafter_for_timing(
    source: str, target: torch.nn.Module, pack: bool, choice: str = "auto", device: str | None = None
) -> tuple[CoralDrafter, str]:
    """A drafter beside `target` as the timing scripts run it: in the `--drafter-dtype` `choice` (resolved against
    the target's dtype) and with packed linear weights when the target's are (`pack`, see
    [`resolve_pack_weights_argument`]). Returns the drafter and its dtype label for reports."""
    from ..loading import load_drafter
    from ..packed_linear import pack_linear_weights

    dtype, label = resolve_drafter_dtype_argument(choice, target.dtype, device)
    drafter = load_drafter(source, target=target, dtype=dtype)
    if pack:
        pack_linear_weights(drafter)
    return drafter, label
