"""Trainer callbacks for CORAL drafters: the multi-step / CSRA schedule, held-out acceptance evaluation, and the
drafter's model card in checkpoints and Hub pushes."""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.utils.data import Dataset, Subset
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from ..hub.card import write_model_card
from ..modeling_coral import CoralDrafter
from .losses import simulated_acceptance_length
from .objective import CoralLossConfig

if TYPE_CHECKING:
    from .trainer import CoralTrainer

# Name of the drafter attribute holding the loss configuration of the current training step. Callbacks receive the
# unwrapped model, so the schedule lives there; `CoralTrainer.compute_loss` reads it at every step. It is a plain
# attribute: not part of the drafter's config, state dict or saved files.
LOSS_CONFIG_ATTRIBUTE = "coral_loss_config"

logger = logging.getLogger(__name__)


class UnrollScheduleCallback(TrainerCallback):
    """Ramp the multi-step depth from 1 to `unroll_steps` and the CSRA weight from 0 to its final value.

    A drafter that has not learnt single-step prediction yet feeds garbage features into the later unrolled steps,
    and CSRA aligns steps that are not meaningful yet; both pay off once single-step training has taken hold. Over
    the first `unroll_warmup_ratio` of the optimizer steps the depth grows one step at a time, each depth taking an
    equal share (n = 3, ratio 0.3, 1000 steps: depth 1 until step 100, 2 until step 200, then 3). The CSRA weight
    grows linearly over the first `csra_warmup_ratio`. A ratio of 0 applies the final value from the first step.

    The schedule is a pure function of `state.global_step` and `state.max_steps`, so a run resumed from a checkpoint
    continues it exactly. The scheduled `CoralLossConfig` is written to the drafter's `coral_loss_config`
    attribute at the beginning of every step; `CoralTrainer` reads it from there.

    Args:
        loss_config: the final loss configuration (the one reached at the end of the ramps).
        unroll_warmup_ratio: fraction of training over which the depth ramps from 1 to `loss_config.unroll_steps`.
        csra_warmup_ratio: fraction of training over which the CSRA weight ramps from 0 to `loss_config.csra_weight`.
    """

    def __init__(self, loss_config: CoralLossConfig, unroll_warmup_ratio: float = 0.0, csra_warmup_ratio: float = 0.0):
        for name, ratio in (("unroll_warmup_ratio", unroll_warmup_ratio), ("csra_warmup_ratio", csra_warmup_ratio)):
            if not 0.0 <= ratio <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {ratio}.")
        self.loss_config = loss_config
        self.unroll_warmup_ratio = unroll_warmup_ratio
        self.csra_warmup_ratio = csra_warmup_ratio

    def config_at(self, step: int, max_steps: int) -> CoralLossConfig:
        """The loss configuration of optimizer step `step` (0-based) of a run of `max_steps` steps."""
        final = self.loss_config
        unroll_steps = final.unroll_steps
        ramp = math.ceil(self.unroll_warmup_ratio * max_steps)
        if ramp > 0:
            unroll_steps = min(final.unroll_steps, 1 + step * final.unroll_steps // ramp)
        csra_weight = final.csra_weight
        ramp = math.ceil(self.csra_warmup_ratio * max_steps)
        if ramp > 0:
            csra_weight = final.csra_weight * min(1.0, step / ramp)
        return replace(final, unroll_steps=unroll_steps, csra_weight=csra_weight)

    def _apply(self, state: TrainerState, model: torch.nn.Module | None) -> None:
        if model is not None:
            setattr(model, LOSS_CONFIG_ATTRIBUTE, self.config_at(state.global_step, state.max_steps))

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        self._apply(state, kwargs.get("model"))

    def on_step_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        self._apply(state, kwargs.get("model"))

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        model = kwargs.get("model")
        if model is not None:
            setattr(model, LOSS_CONFIG_ATTRIBUTE, self.loss_config)


class AcceptanceEvalCallback(TrainerCallback):
    """Measure the drafter's per-depth top-1 accuracy and simulated acceptance length on held-out data.

    Whenever the trainer evaluates (`eval_strategy`, `trainer.evaluate()`), the drafter drafts `depth` tokens ahead
    over the held-out examples exactly as in multi-step training (depth s runs on its own s - 1 earlier
    predictions) and is compared with the target's greedy token at every loss-masked position. It logs
    `{prefix}_acc_step_{s}` for s = 1..depth, the position-weighted accuracy at depth s given that the earlier
    depths ran on the drafter's own features, and `{prefix}_tau_sim` = 1 + sum_k prod_{i<=k} acc_i, the acceptance
    length a chain draft of `depth` tokens would get under greedy verification (an estimate: acc_i is not
    conditioned on the earlier tokens being accepted).

    The values go through `trainer.log`, so they reach `trainer.state.log_history` and every reporting integration,
    and are added to the metrics `trainer.evaluate()` returns (usable as `metric_for_best_model="eval_tau_sim"`).

    Args:
        trainer: the `CoralTrainer` whose drafter, target features and data collator are used.
        eval_dataset: held-out examples (`input_ids`, `loss_mask`, optionally cached `features`); defaults to the
            trainer's `eval_dataset`.
        depth: draft depth measured; defaults to the drafter's `draft_length`.
        max_samples: measure on the first `max_samples` examples only (a fixed subset, so values stay comparable
            across the run); `None` uses them all.
        on_train_begin: also measure before the first training step (the untrained baseline), unless resuming.
        metric_key_prefix: prefix of the logged names.
    """

    def __init__(
        self,
        trainer: CoralTrainer,
        eval_dataset: Dataset | None = None,
        depth: int | None = None,
        max_samples: int | None = None,
        on_train_begin: bool = False,
        metric_key_prefix: str = "eval",
    ):
        if depth is not None and depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}.")
        self.trainer = trainer
        self.eval_dataset = eval_dataset
        self.depth = depth
        self.max_samples = max_samples
        self.measure_on_train_begin = on_train_begin
        self.metric_key_prefix = metric_key_prefix

    @torch.no_grad()
    def measure(self) -> dict[str, float]:
        """Run the measurement now and return the metrics (without logging them)."""
        trainer = self.trainer
        drafter = trainer.model
        dataset = self.eval_dataset if self.eval_dataset is not None else trainer.eval_dataset
        if dataset is None:
            raise ValueError("AcceptanceEvalCallback needs an eval_dataset (its own or the trainer's).")
        if self.max_samples is not None and len(dataset) > self.max_samples:
            dataset = Subset(dataset, range(self.max_samples))
        depth = self.depth or drafter.config.draft_length
        config = replace(
            trainer.loss_config,
            unroll_steps=depth,
            csra_weight=0.0,
            topk_weight=0.0,
            feature_noise=0.0,
            logit_positions=None,  # every position counts in the accuracies
        )
        # Per depth: sum of accuracy x positions; last entry: positions.
        totals = torch.zeros(depth + 1, dtype=torch.float64, device=trainer.args.device)
        was_training = drafter.training
        drafter.eval()
        try:
            for batch in trainer.get_eval_dataloader(dataset):
                _, metrics = trainer.coral_loss(drafter, trainer._prepare_inputs(batch), config)
                positions = metrics["positions"]
                for step in range(1, depth + 1):
                    totals[step - 1] += metrics[f"acc_step_{step}"] * positions
                totals[depth] += positions
        finally:
            drafter.train(was_training)
        totals = trainer.accelerator.reduce(totals, reduction="sum").cpu()
        accuracies = (totals[:depth] / totals[depth].clamp(min=1)).tolist()
        prefix = self.metric_key_prefix
        results = {f"{prefix}_acc_step_{step}": acc for step, acc in enumerate(accuracies, start=1)}
        results[f"{prefix}_tau_sim"] = simulated_acceptance_length(accuracies)
        return results

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl, **kwargs: Any):
        if self.measure_on_train_begin and state.global_step == 0:
            self.trainer.log(self.measure())

    def on_evaluate(
        self,
        args: TrainingArguments,
        state: TrainerState,
        control: TrainerControl,
        metrics: dict[str, float] | None = None,
        **kwargs: Any,
    ):
        results = self.measure()
        if metrics is not None:
            metrics.update(results)
        self.trainer.log(results)


def _find_drafter(model: nn.Module | None) -> CoralDrafter | None:
    """The drafter inside whatever the Trainer trains (the drafter itself, or a wrapper holding it)."""
    if model is None:
        return None
    if isinstance(model, CoralDrafter):
        return model
    drafter = getattr(model, "drafter", None)
    if isinstance(drafter, CoralDrafter):
        return drafter
    return next((module for module in model.modules() if isinstance(module, CoralDrafter)), None)


class DrafterCardCallback(TrainerCallback):
    """Keep the drafter's model card (README.md) in the Trainer's output directory and checkpoints.

    With `TrainingArguments(push_to_hub=True, hub_strategy="every_save" | "checkpoint" | "all_checkpoints")`, the
    Trainer pushes `output_dir` on every save; this callback writes the card right before each push
    (`on_push_begin`), so each pushed revision carries the same card `push_drafter` would write. On save it also
    writes the card into the new `checkpoint-*` folder and `output_dir`.

    Note: `Trainer.push_to_hub()` (the final push) regenerates README.md with the Trainer's generic card through
    `Trainer.create_model_card`. Use `DrafterCardTrainerMixin` in the Trainer class, or finish with
    `push_drafter(trainer.model, repo_id)`, to keep the drafter card there too.

    Args:
        repo_id: repo id for the card's usage snippet; default: `args.hub_model_id`.
        card_kwargs: passed to `render_model_card` (e.g. `license="apache-2.0"`).
    """

    def __init__(self, repo_id: str | None = None, **card_kwargs: Any):
        self.repo_id = repo_id
        self.card_kwargs = card_kwargs

    def _write(self, args: Any, model: nn.Module | None, directories: Iterable[str]) -> None:
        drafter = _find_drafter(model)
        if drafter is None:
            logger.warning("DrafterCardCallback: the trained model holds no CoralDrafter; no card written.")
            return
        repo_id = self.repo_id or getattr(args, "hub_model_id", None)
        for directory in directories:
            if directory and os.path.isdir(directory):
                write_model_card(drafter, directory, repo_id, **self.card_kwargs)

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero and args.push_to_hub and args.hub_token:
            logger.warning(
                "TrainingArguments.hub_token is set: the Trainer pickles its TrainingArguments, token included, into "
                "training_args.bin and pushes that file to the repo, where anyone who can read the repo can read the "
                "token. Authenticate with `hf auth login` or the HF_TOKEN environment variable instead."
            )

    def on_save(self, args, state, control, model=None, **kwargs):
        if state.is_world_process_zero:
            checkpoint = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
            self._write(args, model, [checkpoint, args.output_dir])

    def on_push_begin(self, args, state, control, model=None, **kwargs):
        if state.is_world_process_zero:
            self._write(args, model, [args.output_dir])

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if state.is_world_process_zero and args.should_save:
            self._write(args, model, [args.output_dir])


class DrafterCardTrainerMixin:
    """Mix into a `transformers.Trainer` subclass so `trainer.push_to_hub()` pushes the drafter card.

    `Trainer.push_to_hub` calls `create_model_card`, which by default overwrites README.md with a generic
    training summary; this override writes the drafter card instead (`class MyTrainer(DrafterCardTrainerMixin,
    Trainer)`).
    """

    def create_model_card(self, *args: Any, **kwargs: Any) -> None:
        if not self.is_world_process_zero():
            return
        drafter = _find_drafter(self.accelerator.unwrap_model(self.model))
        if drafter is None:
            super().create_model_card(*args, **kwargs)
            return
        write_model_card(drafter, self.args.output_dir, getattr(self, "hub_model_id", None) or self.args.hub_model_id)
