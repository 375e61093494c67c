"""Training CORAL drafters: data pipeline, losses, and their integration with `transformers.Trainer`.

Names are imported lazily, so `import coral_hf.training` stays cheap until one is used.
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY_NAMES = {
    "AcceptanceEvalCallback": "callbacks",
    "DrafterCardCallback": "callbacks",
    "DrafterCardTrainerMixin": "callbacks",
    "UnrollScheduleCallback": "callbacks",
    "CoralTrainer": "trainer",
    "CoralTrainingArguments": "trainer",
    "CoralFeatureCollator": "feature_cache",
    "FeatureCacheDataset": "feature_cache",
    "StaleFeatureCacheError": "feature_cache",
    "build_feature_cache": "feature_cache",
    "compute_target_features": "feature_cache",
    "CoralLossConfig": "objective",
    "coral_loss": "objective",
    "freeze_for_router_stage": "router",
    "router_loss": "router",
    "router_stage_loss": "router",
    "CoralDataCollator": "data",
    "build_training_dataset": "data",
    "load_conversations": "data",
    "split_conversations": "data",
    "tokenize_conversation": "data",
    "csra_loss": "losses",
    "feature_regression_loss": "losses",
    "simulated_acceptance_length": "losses",
    "soft_cross_entropy": "losses",
    "topk_distillation_loss": "losses",
}

__all__ = sorted(_LAZY_NAMES)


def __getattr__(name: str) -> Any:
    if name not in _LAZY_NAMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_LAZY_NAMES[name]}", __name__), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
