"""The `coral-hf` command: one sub-command per job (demo, train, regenerate, datastore, bench, push, pull)."""

from __future__ import annotations

import argparse
import importlib
import sys

# Each module under coral_hf.commands exposes `register(subparsers)`; imported lazily at parse time
# so `coral-hf --help` stays fast and a sub-command's heavy imports load only when it runs.
COMMAND_MODULES = (
    "coral_hf.commands.demo",
    "coral_hf.commands.train",
    "coral_hf.commands.regenerate",
    "coral_hf.commands.datastore",
    "coral_hf.commands.bench",
    "coral_hf.commands.hub",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="coral-hf",
        description="CORAL speculative drafters for Hugging Face transformers.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module_name in COMMAND_MODULES:
        importlib.import_module(module_name).register(subparsers)
    return parser


DEBUG_ENV = "CORAL_HF_DEBUG"


def _one_line(error: BaseException) -> str:
    """What went wrong, in one line, with what to do where it is known."""
    # The Hub client's transport errors (httpx2 for huggingface_hub 2.x, httpx for 1.x), matched by name so that
    # neither transport is a dependency of this module.
    names = {cls.__name__ for cls in type(error).__mro__}
    if names & {"TransportError", "ConnectError", "ConnectTimeout", "ConnectionError"}:
        return (
            f"the Hugging Face Hub is unreachable ({type(error).__name__}: {error}). Files already downloaded are "
            "in the cache: rerun with HF_HUB_OFFLINE=1 to use them."
        )
    text = " ".join(str(error).split()) or type(error).__name__
    return text if isinstance(error, (OSError, ValueError)) else f"{type(error).__name__}: {text}"


def main(argv: list[str] | None = None) -> int:
    """Run one sub-command. Expected failures (missing or corrupt files, bad input, no network) print one
    `error:` line and exit with 2; `--debug` or `CORAL_HF_DEBUG=1` shows the traceback instead."""
    import os

    parser = build_parser()
    parser.add_argument("--debug", action="store_true", help=f"Show tracebacks (or set {DEBUG_ENV}=1).")
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as error:  # noqa: BLE001 - the CLI's boundary: every failure becomes one line
        if args.debug or os.environ.get(DEBUG_ENV):
            raise
        print(f"error: {_one_line(error)}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
