"""Sharing drafters on the Hugging Face Hub: push with a model card, pull with safety and target checks.

- `push_drafter` (`hub.push`) uploads config, generation config, safetensors weights and a model card (README.md,
  `hub.card`) in **one commit**: a failed push leaves the repo as it was.
- `pull_drafter` / `download_drafter` (`hub.pull`) download only the files a drafter needs (never a pickle,
  `hub.safety`), check the drafter belongs to the target, and attach it; offline from the cache too.
- The Trainer integration (`DrafterCardCallback`, `DrafterCardTrainerMixin`) lives with the other callbacks in
  `coral_hf.training.callbacks`.

Names are imported lazily: `hub.safety` and `hub.push` do not import the drafter model, so the model can use them
without an import cycle, while `hub.pull` (which loads drafters) imports it.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY_NAMES = {
    "DRAFTER_FILE_PATTERNS": "safety",
    "PICKLE_PATTERNS": "safety",
    "UnsafeCheckpointError": "safety",
    "check_safetensors_only": "safety",
    "CARD_NAME": "card",
    "render_model_card": "card",
    "write_model_card": "card",
    "push_drafter": "push",
    "download_drafter": "pull",
    "pull_drafter": "pull",
}

__all__ = sorted(_LAZY_NAMES)


def __getattr__(name: str) -> Any:
    if name in _LAZY_NAMES:
        return getattr(importlib.import_module(f".{_LAZY_NAMES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY_NAMES])
