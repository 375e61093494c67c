"""The `coral-hf` command: one sub-command per job (demo, train, bench, push, pull)."""

from __future__ import annotations

import argparse
import importlib
import sys

# Each module under coral_hf.commands exposes `register(subparsers)`; imported lazily at parse time
# so `coral-hf --help` stays fast and a sub-command's heavy imports load only when it runs.
COMMAND_MODULES = (
    "coral_hf.commands.demo",
    "coral_hf.commands.train",
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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
