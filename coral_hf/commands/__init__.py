"""`coral-hf` sub-commands: each module registers one sub-command (see `coral_hf.cli`)."""

from __future__ import annotations

import sys

EXIT_ERROR = 2  # an expected failure (bad input, missing or corrupt files, no network), as `coral_hf.cli` returns


def fail(message: str) -> int:
    """Print one `error:` line and return the exit status of an expected failure.

    Library errors may add details after a blank line (the underlying exception); the command line shows only what
    comes before it, on one line.
    """
    first_paragraph = message.split("\n\n")[0]
    print(f"error: {' '.join(first_paragraph.split())}", file=sys.stderr)
    return EXIT_ERROR
