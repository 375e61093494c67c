"""Train a CORAL drafter from Python with `CoralTrainer` (the stock `transformers.Trainer`) on a chat file.

    python examples/train_drafter.py --data chats.jsonl --output-dir ./my-drafter --max-steps 200
    accelerate launch --num_processes 2 examples/train_drafter.py --data chats.jsonl --output-dir ./my-drafter --cpu

`chats.jsonl` holds one conversation per line: `{"messages": [{"role": "user", ...}, {"role": "assistant", ...}]}`
(ShareGPT `{"conversations": [...]}` records work too). The same run from the command line is `coral-hf train`.
"""

from __future__ import annotations

import argparse

import torch

import coral_hf
from coral_hf.lm_head import token_frequencies
from coral_hf.training.data import build_training_dataset, load_conversations, split_conversations
from coral_hf.training.trainer import CoralTrainer, CoralTrainingArguments


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--target", default="smollm2-135m-instruct")
    parser.add_argument("--data", required=True, help="Chat JSONL file, or 'sharegpt'.")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--max-steps", type=int, default=200)
    parser.add_argument("--max-length", type=int, default=512)
    parser.add_argument("--shortlist-size", type=int, default=None, help="Draft vocabulary size (default: full).")
    parser.add_argument("--cpu", action="store_true")
    args = parser.parse_args(argv)

    target, tokenizer = coral_hf.load_target(args.target)
    train, heldout = split_conversations(load_conversations(args.data), heldout_fraction=0.05)
    train_dataset = build_training_dataset(tokenizer, train, max_length=args.max_length)
    eval_dataset = build_training_dataset(tokenizer, heldout or train[-1:], max_length=args.max_length)

    draft_vocabulary = {}
    if args.shortlist_size:  # a frequency shortlist of the assistant tokens: cheaper token losses and draft steps
        counts = token_frequencies(train_dataset["input_ids"], target.config.vocab_size, train_dataset["loss_mask"])
        draft_vocabulary = dict(
            token_counts=counts, num_groups=8, shortlist_size=args.shortlist_size, head_mode="shortlist"
        )
    drafter = coral_hf.CoralDrafter.from_target(target, dtype=torch.float32, **draft_vocabulary)

    training_args = CoralTrainingArguments(
        output_dir=args.output_dir,
        max_steps=args.max_steps,
        learning_rate=5e-4,
        per_device_train_batch_size=4,
        unroll_steps=3,  # multi-step (HASS) training
        csra_weight=0.1,  # CORAL's cross-step representation alignment
        ce_weight=1.0,
        logit_vocab="shortlist" if args.shortlist_size else "full",
        max_length=args.max_length,
        eval_strategy="steps",
        eval_steps=max(args.max_steps // 4, 1),
        save_steps=max(args.max_steps // 4, 1),
        use_cpu=args.cpu,
        report_to="none",
    )
    trainer = CoralTrainer(
        model=drafter,
        args=training_args,
        processing_class=tokenizer,
        train_dataset=train_dataset,
        eval_dataset=eval_dataset,
    )
    trainer.train()
    trainer.save_model(args.output_dir)
    print(f"held-out tau_sim: {trainer.training_recipe()['heldout_eval']['tau_sim']:.3f}; saved to {args.output_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
