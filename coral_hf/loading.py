"""`load_drafter`: one call from a name, path or Hub id to a drafter attached to its target."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from .modeling_coral import CoralDrafter
from .targets import DEFAULT_TARGET, DEFAULT_TARGET_HUB_ID, check_model_source

# Drafters that ship inside the package, by target name.
SHIPPED_DRAFTERS_DIR = Path(__file__).parent / "drafters"
_SHIPPED_ALIASES = {DEFAULT_TARGET: DEFAULT_TARGET, DEFAULT_TARGET_HUB_ID.lower(): DEFAULT_TARGET}


def shipped_drafter_path(name: str) -> Path | None:
    """Directory of the drafter shipped for target `name`, if the package has one."""
    key = _SHIPPED_ALIASES.get(name.lower())
    if key is None:
        return None
    path = SHIPPED_DRAFTERS_DIR / key
    return path if (path / "config.json").is_file() else None


def load_drafter(name_or_path: str, target: nn.Module, revision: str | None = None, **kwargs: Any) -> CoralDrafter:
    """Load a drafter and attach it to `target`, refusing a drafter built for another target.

    Args:
        name_or_path: a target name with a shipped drafter (`"smollm2-135m-instruct"`), a local directory,
            or a Hub repo id.
        target: the model to draft for.
        revision: Hub revision (branch, tag or commit).
        kwargs: passed to `CoralDrafter.from_pretrained`.
    """
    shipped = shipped_drafter_path(name_or_path) if not Path(name_or_path).exists() else None
    source = shipped if shipped is not None else name_or_path
    if shipped is None:
        check_model_source(name_or_path, "drafter")
    return CoralDrafter.from_pretrained(source, target=target, revision=revision, **kwargs)
