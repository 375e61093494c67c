"""Rebuild a drafter's static shortlist from the tokens its target writes, and save the drafter with it.

    python scripts/rebuild_shortlist.py runs/stage7-code --output runs/stage7-code-sl \
      --data runs/regen/sharegpt-turn1-greedy.jsonl runs/regen/sharegpt-turn2-greedy.jsonl \
      runs/regen/stdlib-code-greedy.jsonl

The shortlist head (`head_mode="shortlist"`) drafts only among the `shortlist_size` most frequent tokens of the data
the grouped head was built on; a token outside it can never be drafted. The shipped drafter's shortlist was counted
on the original ShareGPT text at stage 1, while it learns to predict the target's own answers (and since stage 7,
code): counting the assistant tokens of regenerated data instead covers more of what the target writes. Only the
shortlist changes (the router's vocabulary permutation and every weight stay); the held-out split of each file is
left out of the counts, as `coral-hf train` holds it out. Prints the coverage of the assistant tokens of the data
by the old and the new shortlist.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from coral_hf import load_drafter, load_target
from coral_hf.lm_head import frequency_shortlist, token_frequencies
from coral_hf.training.data import build_training_dataset, load_conversations, split_conversations


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("drafter_dir", type=Path)
    parser.add_argument("--data", type=Path, nargs="+", required=True, help="Chat JSONL files the target answered.")
    parser.add_argument("--output", type=Path, required=True)
    parser.add_argument("--target", default="smollm2-135m-instruct")
    parser.add_argument("--max-length", type=int, default=512)
    args = parser.parse_args()

    target, tokenizer = load_target(args.target)
    drafter = load_drafter(str(args.drafter_dir), target=target)
    head = drafter.grouped_head
    if head is None:
        raise SystemExit(f"error: {args.drafter_dir} has no grouped head, so no shortlist to rebuild")
    vocab_size = drafter.config.target_vocab_size
    counts = torch.zeros(vocab_size, dtype=torch.long)
    for path in args.data:
        train, _ = split_conversations(load_conversations(path))
        dataset = build_training_dataset(tokenizer, train, max_length=args.max_length)
        counts += token_frequencies(dataset["input_ids"], vocab_size, dataset["loss_mask"])
    shortlist = frequency_shortlist(counts.double(), head.shortlist.numel())
    total = counts.sum().item()
    old_coverage = counts[head.shortlist].sum().item() / total
    new_coverage = counts[shortlist].sum().item() / total
    kept = len(set(shortlist.tolist()) & set(head.shortlist.tolist()))
    head.set_grouping(head.permutation, shortlist)
    recipe = dict(drafter.config.training_recipe or {})
    recipe["shortlist"] = {
        "counted_on": [path.name for path in args.data],
        "assistant_tokens": total,
        "coverage_before": round(old_coverage, 4),
        "coverage": round(new_coverage, 4),
    }
    drafter.config.training_recipe = recipe
    drafter.save_pretrained(args.output)
    print(
        f"{total:,} assistant tokens: shortlist coverage {old_coverage:.4f} -> {new_coverage:.4f} "
        f"({kept} of {shortlist.numel()} ids kept); saved to {args.output}"
    )


if __name__ == "__main__":
    main()
