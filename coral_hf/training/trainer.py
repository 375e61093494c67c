"""Training CORAL drafters with the stock `transformers.Trainer`: `CoralTrainingArguments` and `CoralTrainer`."""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch
import transformers
from torch import nn
from torch.utils.data import Dataset
from transformers import Trainer, TrainingArguments
from transformers.trainer import TRAINING_ARGS_NAME
from transformers.trainer_utils import TrainOutput

from ..modeling_coral import CoralDrafter
from ..target_utils import unwrap_target
from .callbacks import (
    LOSS_CONFIG_ATTRIBUTE,
    AcceptanceEvalCallback,
    DrafterCardTrainerMixin,
    UnrollScheduleCallback,
)
from .feature_cache import (
    CoralFeatureCollator,
    build_feature_cache,
    compute_fused_target_features,
    compute_target_features,
)
from .objective import CoralLossConfig, coral_loss
from .router import freeze_for_router_stage, router_stage_loss

_LOSS_FIELDS = tuple(f.name for f in fields(CoralLossConfig))


@dataclass
class CoralTrainingArguments(TrainingArguments):
    r"""
    `TrainingArguments` for CORAL drafters: the CORAL objective, its schedule, the feature source and held-out
    acceptance evaluation, on top of every `transformers.TrainingArguments` option.

    Defaults differ from `TrainingArguments` where the drafter recipe (EAGLE / HASS / CORAL) calls for it, scaled
    for short CPU runs: AdamW betas (0.9, 0.95), peak learning rate 1e-4 (the GPU recipe uses 3e-5 for many
    epochs over 68k conversations; short CPU runs need a larger step to move), 1% linear warm-up then linear decay,
    gradient clipping **by value** at 0.5 (`max_grad_value`, as in EAGLE) instead of by norm (`max_grad_norm=0`),
    batch size 2, logging every 10 steps, fp32 (pass `bf16=True` on GPUs). Every field below is also a
    `--flag` of `HfArgumentParser`.

    Loss fields (`unroll_steps` ... `feature_noise`) are those of [`CoralLossConfig`] and give the final objective;
    `unroll_warmup_ratio` and `csra_warmup_ratio` ramp into it (see [`UnrollScheduleCallback`]).
    """

    # ----- CORAL objective (CoralLossConfig) -----
    unroll_steps: int = field(
        default=3,
        metadata={
            "help": "Multi-step (HASS) training depth n: steps >= 2 run on the drafter's own earlier "
            "predictions. 1 is EAGLE-style single-step training."
        },
    )
    feature_weight: float = field(default=1.0, metadata={"help": "Weight of the SmoothL1 loss on features."})
    ce_weight: float = field(
        default=0.1, metadata={"help": "Weight of the soft cross-entropy against the target's distribution."}
    )
    topk_weight: float = field(
        default=0.0, metadata={"help": "Weight of HASS's top-K distillation loss (0 disables it)."}
    )
    topk: int = field(default=10, metadata={"help": "K of the top-K distillation loss."})
    csra_weight: float = field(
        default=0.0,
        metadata={
            "help": "Weight lambda of CORAL's Cross-Step Representation Alignment (InfoNCE between the "
            "unrolled steps' outputs). Only meaningful with unroll_steps >= 2."
        },
    )
    csra_temperature: float = field(default=0.1, metadata={"help": "InfoNCE temperature tau_c of CSRA."})
    csra_pairing: str = field(
        default="all",
        metadata={
            "help": "CSRA step pairs: 'all' ordered pairs, or 'anchor' (step 1 against each later step).",
            "choices": ["all", "anchor"],
        },
    )
    csra_stop_grad: bool = field(default=False, metadata={"help": "Detach the positive/key side of each CSRA pair."})
    csra_max_positions: int | None = field(
        default=512,
        metadata={
            "help": "Subsample at most this many positions for CSRA's N x N similarity matrices (None: all positions)."
        },
    )
    feature_noise: float = field(
        default=0.0,
        metadata={
            "help": "Amplitude a of U(-a, a) noise added to the real input features during training (EAGLE "
            "uses 0.2 at GPU scale)."
        },
    )
    logit_vocab: str = field(
        default="full",
        metadata={
            "help": "Vocabulary of the token losses: 'full' LM head, or the drafter's 'shortlist' (a draft "
            "vocabulary: vocabulary-sized work shrinks by vocab / shortlist size; needs a grouped head).",
            "choices": ["full", "shortlist"],
        },
    )
    logit_positions: int | None = field(
        default=None,
        metadata={
            "help": "At most this many loss positions per batch get the vocabulary-sized terms (soft CE, "
            "top-K, accuracy); the feature loss uses all. Bounds the LM-head cost on CPU (None: all)."
        },
    )

    # ----- Schedule (UnrollScheduleCallback) -----
    unroll_warmup_ratio: float = field(
        default=0.1,
        metadata={
            "help": "Fraction of the training steps over which the unroll depth grows from 1 to "
            "unroll_steps, one depth at a time (0: full depth from the first step)."
        },
    )
    csra_warmup_ratio: float = field(
        default=0.1,
        metadata={
            "help": "Fraction of the training steps over which the CSRA weight grows linearly from 0 to "
            "csra_weight (0: full weight from the first step)."
        },
    )

    # ----- Target features -----
    feature_cache_dir: str | None = field(
        default=None,
        metadata={
            "help": "Precompute the target's features into this directory (train/ and eval/ caches, "
            "resumable, checked against the target and data) instead of running the target at every step.",
            "aliases": ["--feature-cache"],
        },
    )
    feature_cache_dtype: str = field(
        default="bfloat16",
        metadata={"help": "Storage precision of the feature cache.", "choices": ["bfloat16", "float16"]},
    )
    max_length: int | None = field(
        default=None,
        metadata={
            "help": "The max_length the data was tokenized with: recorded in the training recipe and the "
            "feature cache manifest (a cache built for another max_length is refused). Examples must not "
            "be longer."
        },
    )
    dataset_name: str | None = field(
        default=None, metadata={"help": "Name of the training data, recorded in the model card's recipe."}
    )

    # ----- Acceptance evaluation (AcceptanceEvalCallback) -----
    acceptance_eval_depth: int | None = field(
        default=None,
        metadata={
            "help": "Draft depth of the held-out acceptance evaluation (eval_acc_step_1.. and eval_tau_sim, "
            "measured whenever the trainer evaluates). Default: the drafter's draft_length; 0 disables it."
        },
    )
    acceptance_eval_max_samples: int | None = field(
        default=None,
        metadata={"help": "Measure acceptance on the first N held-out examples only (None: all of them)."},
    )
    acceptance_eval_on_start: bool = field(
        default=True,
        metadata={
            "help": "Also measure acceptance before the first step (the untrained baseline), when an "
            "eval_dataset is given and the run does not resume."
        },
    )

    # ----- Optimisation (recipe defaults) -----
    stage: str = field(
        default="drafter",
        metadata={
            "help": "What to train: 'drafter' (the CORAL objective) or 'router' (only the grouped head's "
            "router, the drafter frozen; the drafter needs a grouped head, see `init_grouped_head`)."
        },
    )
    router_soft_labels: bool = field(
        default=True,
        metadata={
            "help": "Router stage: train on the target's probability mass per group (True) or on the group "
            "of its top-1 token (False)."
        },
    )
    max_grad_value: float | None = field(
        default=0.5,
        metadata={
            "help": "Clip every gradient element to [-v, v] before each optimizer step (EAGLE/HASS recipe); "
            "None or 0 disables it. Applied after max_grad_norm clipping when both are set."
        },
    )
    learning_rate: float = field(default=1e-4, metadata={"help": "Peak learning rate of AdamW."})
    adam_beta2: float = field(default=0.95, metadata={"help": "AdamW beta2 (drafter recipe: 0.95)."})
    warmup_steps: float = field(
        default=0.01, metadata={"help": "Linear warm-up: steps (>= 1) or a fraction of training (< 1)."}
    )
    max_grad_norm: float = field(
        default=0.0, metadata={"help": "Gradient clipping by global norm (0 disables it; see max_grad_value)."}
    )
    per_device_train_batch_size: int = field(
        default=2, metadata={"help": "Training batch size per device.", "aliases": ["--batch-size"]}
    )
    per_device_eval_batch_size: int = field(default=2, metadata={"help": "Evaluation batch size per device."})
    num_train_epochs: float = field(
        default=1.0,
        metadata={"help": "Training epochs (max_steps, when > 0, overrides it).", "aliases": ["--epochs"]},
    )
    use_cpu: bool = field(
        default=False, metadata={"help": "Train on CPU even when a GPU is available.", "aliases": ["--cpu"]}
    )
    logging_steps: float = field(default=10, metadata={"help": "Log every X optimizer steps."})
    include_num_input_tokens_seen: str = field(
        default="non_padding",
        metadata={"help": "Count tokens seen (non-padding), for train_tokens_per_second and the recipe."},
    )
    ddp_find_unused_parameters: bool | None = field(
        default=False,
        metadata={"help": "DDP's find_unused_parameters; every drafter parameter is used at every step."},
    )

    def __post_init__(self):
        super().__post_init__()
        if self.unroll_steps < 1:
            raise ValueError(f"unroll_steps must be >= 1, got {self.unroll_steps}.")
        if self.csra_pairing not in ("all", "anchor"):
            raise ValueError(f"csra_pairing must be 'all' or 'anchor', got {self.csra_pairing!r}.")
        for name in ("unroll_warmup_ratio", "csra_warmup_ratio"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {getattr(self, name)}.")
        if self.stage not in ("drafter", "router"):
            raise ValueError(f"stage must be 'drafter' or 'router', got {self.stage!r}.")
        if self.acceptance_eval_depth is not None and self.acceptance_eval_depth < 0:
            raise ValueError(f"acceptance_eval_depth must be >= 0, got {self.acceptance_eval_depth}.")

    def loss_config(self) -> CoralLossConfig:
        """The final CORAL objective described by these arguments."""
        return CoralLossConfig(**{name: getattr(self, name) for name in _LOSS_FIELDS})


class _SyncedDrafter:
    """The drafter as `coral_loss` sees it under DistributedDataParallel.

    Forward calls go through the DDP wrapper, which is what makes DDP all-reduce the gradients; attribute reads
    (`config`, `compute_logits`, ...) go to the drafter itself, which the wrapper does not expose.
    """

    def __init__(self, wrapper: nn.Module, drafter: CoralDrafter):
        self._wrapper = wrapper
        self._drafter = drafter

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self._wrapper(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._drafter, name)


class CoralTrainer(DrafterCardTrainerMixin, Trainer):
    """`transformers.Trainer` for a [`CoralDrafter`] attached to its frozen target.

    Only the drafter is trained: its target is a plain attribute (`drafter.target`), not a submodule, so it is not
    optimised, wrapped by DDP or saved, and `trainer.save_model()` writes the drafter alone. Each batch (from
    `CoralFeatureCollator`: `input_ids`, `attention_mask`, `loss_mask`) gets its target features either from the
    batch itself (`features`, from a feature cache) or from a no-grad forward of the target; `coral_loss` then
    unrolls the drafter and computes the CORAL objective.

    On top of the stock loop it:
    - applies the multi-step / CSRA schedule ([`UnrollScheduleCallback`], added automatically);
    - logs the objective's parts (`loss_step_{s}`, `acc_step_{s}`, `feature_loss`, `ce_loss`, `csra`) and the
      scheduled `unroll_steps` / `csra_weight`, averaged over each logging window, next to `loss`;
    - evaluates `eval_loss` with the final (un-ramped) objective, and per-depth acceptance with
      [`AcceptanceEvalCallback`] (added automatically when `eval_dataset` is a single dataset);
    - clips gradients by value (`max_grad_value`);
    - builds and uses a feature cache when `feature_cache_dir` is set;
    - records the training recipe in `drafter.config.training_recipe` at the end of `train()`, and pushes the
      drafter's model card (not the Trainer's generic one) with `trainer.push_to_hub()`.

    Args:
        model: the drafter to train, attached to its target (`CoralDrafter.from_target(target)`).
        args: [`CoralTrainingArguments`].
        data_collator: defaults to `CoralFeatureCollator(processing_class)`.
        train_dataset, eval_dataset: tokenized examples with `input_ids` and `loss_mask` (`build_training_dataset`),
            or feature caches (`FeatureCacheDataset`).
        processing_class: the target's tokenizer, for the pad id of the default collator only (a drafter checkpoint
            holds no tokenizer: it uses its target's).
        target: attach the drafter to this target first (when it is not attached yet).
        kwargs: any other `transformers.Trainer` argument (`callbacks`, `optimizers`, ...).
    """

    # `coral_loss` returns a per-micro-batch mean: the stock loop divides it by the accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(
        self,
        model: CoralDrafter,
        args: CoralTrainingArguments | None = None,
        data_collator: Any = None,
        train_dataset: Dataset | None = None,
        eval_dataset: Dataset | dict[str, Dataset] | None = None,
        processing_class: Any = None,
        target: nn.Module | None = None,
        **kwargs: Any,
    ):
        if not isinstance(model, CoralDrafter):
            raise TypeError(f"CoralTrainer trains a CoralDrafter, got {type(model).__name__}.")
        if target is not None and model.target is not target:
            model.attach(target)
        if model.target is None:
            raise ValueError(
                "The drafter is not attached to a target: build it with `CoralDrafter.from_target(target)` or pass "
                "`target=`."
            )
        args = args if args is not None else CoralTrainingArguments(output_dir="coral-drafter")
        if not isinstance(args, CoralTrainingArguments):
            raise TypeError("CoralTrainer needs CoralTrainingArguments (they carry the CORAL objective).")
        if data_collator is None:
            if processing_class is None:
                raise ValueError("Pass `processing_class` (the target's tokenizer) or a `data_collator`.")
            data_collator = CoralFeatureCollator(processing_class)
        target_model = unwrap_target(model.target)
        target_model.requires_grad_(False)
        target_model.eval()
        if args.stage == "router":
            if model.grouped_head is None:
                raise ValueError("stage='router' needs a drafter with a grouped head: call `init_grouped_head` first.")
            freeze_for_router_stage(model)
        # The tokenizer belongs to the target: it only feeds the collator. Handing it to `Trainer` would save it into
        # the drafter's checkpoints and realign the drafter's config to its special tokens.
        super().__init__(
            model=model,
            args=args,
            data_collator=data_collator,
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
            **kwargs,
        )
        if not hasattr(target_model, "hf_device_map") and target_model.device != self.args.device:
            target_model.to(self.args.device)
        if args.stage == "router" and self.args.world_size > 1:
            # The router is called outside the DDP wrapper, so its gradients would not be synchronised.
            raise ValueError("The router stage trains on one process; run it without distributed launch.")

        self.loss_config = args.loss_config()
        setattr(model, LOSS_CONFIG_ATTRIBUTE, self.loss_config)
        self.add_callback(UnrollScheduleCallback(self.loss_config, args.unroll_warmup_ratio, args.csra_warmup_ratio))
        if args.feature_cache_dir is not None:
            if model.config.fused_feature_layers:
                raise ValueError(
                    "A feature cache holds the target's last-layer features only: train a drafter with "
                    "fused_feature_layers on online features (no feature_cache_dir)."
                )
            self._use_feature_cache(Path(args.feature_cache_dir))
        # With several named eval sets, add `AcceptanceEvalCallback`s by hand (one per set that matters).
        single_eval_set = self.eval_dataset is not None and not isinstance(self.eval_dataset, dict)
        if single_eval_set and args.acceptance_eval_depth != 0 and args.stage == "drafter":
            self.add_callback(
                AcceptanceEvalCallback(
                    self,
                    depth=args.acceptance_eval_depth,
                    max_samples=args.acceptance_eval_max_samples,
                    on_train_begin=args.acceptance_eval_on_start,
                )
            )
        self._metric_sums: dict[str, float] = defaultdict(float)
        self._metric_weights: dict[str, float] = defaultdict(float)

    # ------------------------------------------------------------------ data

    def _use_feature_cache(self, cache_dir: Path) -> None:
        """Replace the datasets by feature caches of them (built, resumed or reused) in `cache_dir`."""
        args = self.args
        options = {
            "max_length": args.max_length,
            "dtype": args.feature_cache_dtype,
            "batch_size": args.per_device_eval_batch_size,
            "progress": not args.disable_tqdm,
        }
        target = self.model.target
        if self.train_dataset is not None:
            self.train_dataset = build_feature_cache(target, self.train_dataset, cache_dir / "train", **options)
        if isinstance(self.eval_dataset, dict):
            self.eval_dataset = {
                name: build_feature_cache(target, dataset, cache_dir / f"eval-{name}", **options)
                for name, dataset in self.eval_dataset.items()
            }
        elif self.eval_dataset is not None:
            self.eval_dataset = build_feature_cache(target, self.eval_dataset, cache_dir / "eval", **options)

    def _set_signature_columns_if_needed(self) -> None:
        # The drafter's forward takes features as `hidden_states`; the trainer's batches carry the columns below.
        if self._signature_columns is None:
            self._signature_columns = ["input_ids", "attention_mask", "loss_mask", "features"]

    # ------------------------------------------------------------------ loss

    def coral_loss(
        self, model: nn.Module, inputs: dict[str, torch.Tensor], config: CoralLossConfig
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The CORAL objective of one batch with `config`: features from the batch or the target, then `coral_loss`.

        `model` is the drafter, or its DDP wrapper during distributed training (forward calls must go through it).
        """
        drafter = self.model
        attention_mask = inputs.get("attention_mask")
        features, fused = inputs.get("features"), None
        fused_layers = drafter.config.fused_feature_layers
        if features is None and fused_layers:
            features, fused = compute_fused_target_features(
                drafter.target, inputs["input_ids"], attention_mask, fused_layers
            )
        elif features is None:
            features = compute_target_features(drafter.target, inputs["input_ids"], attention_mask)
        if self.args.stage == "router":
            return router_stage_loss(
                drafter,
                inputs["input_ids"],
                features,
                inputs["loss_mask"],
                attention_mask,
                unroll_steps=config.unroll_steps,
                soft_labels=self.args.router_soft_labels,
                fused_features=fused,
            )
        if model is not drafter:
            drafter = _SyncedDrafter(model, drafter)
        return coral_loss(
            drafter, inputs["input_ids"], features, inputs["loss_mask"], attention_mask, config, fused_features=fused
        )

    def compute_loss(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor],
        return_outputs: bool = False,
        num_items_in_batch: torch.Tensor | int | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, dict[str, float]]:
        """Training: the scheduled objective (the drafter's `coral_loss_config`); evaluation: the final one."""
        if model.training:
            config = getattr(self.model, LOSS_CONFIG_ATTRIBUTE)
        else:
            config = replace(self.loss_config, feature_noise=0.0)
        loss, metrics = self.coral_loss(model, inputs, config)
        if model.training:
            self._accumulate(metrics, config)
        return (loss, metrics) if return_outputs else loss

    def prediction_step(
        self,
        model: nn.Module,
        inputs: dict[str, torch.Tensor],
        prediction_loss_only: bool,
        ignore_keys: list[str] | None = None,
    ) -> tuple[torch.Tensor, None, None]:
        """`eval_loss` of one batch (the drafter has no labels or logits to gather)."""
        inputs = self._prepare_inputs(inputs)
        with torch.no_grad(), self.compute_loss_context_manager():
            loss = self.compute_loss(model, inputs)
        return loss.detach(), None, None

    # ------------------------------------------------------------------ optimisation

    def create_optimizer(self, model: nn.Module | None = None) -> torch.optim.Optimizer:
        """The stock optimizer (drafter parameters only), plus by-value gradient clipping when `max_grad_value` is set.

        The clipping runs as an optimizer step pre-hook: after gradient accumulation, the DDP all-reduce, the
        mixed-precision unscaling and `max_grad_norm` clipping, right before the update.
        """
        optimizer = super().create_optimizer(model)
        limit = self.args.max_grad_value
        if limit and not getattr(optimizer, "_coral_value_clipping", False):
            parameters = [p for group in optimizer.param_groups for p in group["params"]]
            optimizer.register_step_pre_hook(lambda *_: nn.utils.clip_grad_value_(parameters, limit))
            optimizer._coral_value_clipping = True
        return optimizer

    def _save(self, output_dir: str | None = None, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        # The stock `_save` also writes the collator's tokenizer: a drafter checkpoint holds only the drafter.
        output_dir = output_dir if output_dir is not None else self.args.output_dir
        os.makedirs(output_dir, exist_ok=True)
        self.model.save_pretrained(output_dir, state_dict=state_dict, is_main_process=self.args.should_save)
        if self.args.should_save:
            torch.save(self.args, os.path.join(output_dir, TRAINING_ARGS_NAME))

    # ------------------------------------------------------------------ logging

    def _accumulate(self, metrics: dict[str, float], config: CoralLossConfig) -> None:
        weight = metrics.get("positions", 1.0)
        for name, value in metrics.items():
            if name != "positions":
                self._metric_sums[name] += value * weight
                self._metric_weights[name] += weight
        for name in ("unroll_steps", "csra_weight"):
            self._metric_sums[name] += getattr(config, name)
            self._metric_weights[name] += 1.0

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        """Add the objective's parts, averaged since the previous log, to training logs (those with `loss`)."""
        if "loss" in logs and self._metric_weights:
            names = sorted(self._metric_weights)
            totals = torch.tensor(
                [[self._metric_sums[name] for name in names], [self._metric_weights[name] for name in names]],
                dtype=torch.float64,
                device=self.args.device,
            )
            totals = self.accelerator.reduce(totals, reduction="sum").cpu()
            logs = {**logs, **{name: (totals[0, i] / totals[1, i]).item() for i, name in enumerate(names)}}
            self._metric_sums.clear()
            self._metric_weights.clear()
        super().log(logs, start_time)

    # ------------------------------------------------------------------ recipe

    def train(self, *args: Any, **kwargs: Any) -> TrainOutput:
        """`Trainer.train`, then record the training recipe in `drafter.config.training_recipe`."""
        self._metric_sums.clear()
        self._metric_weights.clear()
        output = super().train(*args, **kwargs)
        self.model.config.training_recipe = self.training_recipe(output)
        return output

    def training_recipe(self, output: TrainOutput | None = None) -> dict[str, Any]:
        """How the drafter was trained (data, steps, objective, schedule, optimiser, wall time, held-out tau_sim)."""
        from .. import __version__

        args, state = self.args, self.state
        precision = "bf16" if args.bf16 else "fp16" if args.fp16 else str(self.model.dtype).removeprefix("torch.")
        recipe: dict[str, Any] = {
            "stage": args.stage,
            "data": args.dataset_name,
            "train_examples": len(self.train_dataset) if self.train_dataset is not None else None,
            "max_length": args.max_length,
            "steps": state.global_step,
            "epochs": round(state.epoch, 3) if state.epoch is not None else None,
            "tokens_seen": int(state.num_input_tokens_seen) or None,
            "batch_size": args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size,
            "objective": asdict(self.loss_config),
            "schedule": {
                "unroll_warmup_ratio": args.unroll_warmup_ratio,
                "csra_warmup_ratio": args.csra_warmup_ratio,
            },
            "optimizer": {
                "name": getattr(args.optim, "value", args.optim),
                "learning_rate": args.learning_rate,
                "betas": [args.adam_beta1, args.adam_beta2],
                "weight_decay": args.weight_decay,
                "lr_scheduler": getattr(args.lr_scheduler_type, "value", args.lr_scheduler_type),
                "warmup_steps": args.warmup_steps,
                "max_grad_value": args.max_grad_value,
                "max_grad_norm": args.max_grad_norm,
            },
            "precision": precision,
            "features": f"cache ({args.feature_cache_dtype})" if args.feature_cache_dir else "online",
            "processes": args.world_size,
            "seed": args.seed,
            "software": f"coral_hf {__version__}, transformers {transformers.__version__}, torch {torch.__version__}",
        }
        if output is not None:
            recipe["train_runtime_s"] = round(output.metrics["train_runtime"], 1)
            recipe["final_train_loss"] = round(output.training_loss, 4)
        heldout = next((entry for entry in reversed(state.log_history) if "eval_tau_sim" in entry), None)
        if heldout is not None:
            recipe["heldout_eval"] = {
                key.removeprefix("eval_"): round(value, 4) for key, value in heldout.items() if key.startswith("eval_")
            } | {"step": heldout["step"]}
        return recipe


__all__ = ["CoralTrainer", "CoralTrainingArguments"]
