"""Package a trained drafter inside coral_hf (the embedded default's drafter) with its model card.

    python scripts/ship_drafter.py /work/runs/long --draft-length 4 --prompt-lookup-tokens 4 [--bench-json r.json ...]

Sets the drafting defaults, records measured results for the card, stores the weights in bfloat16 (they are cast to
the target's dtype on load) under coral_hf/drafters/<target>/, and copies the card to model_cards/.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

from coral_hf import load_drafter, load_target
from coral_hf.hub import write_model_card
from coral_hf.targets import DEFAULT_TARGET
from coral_hf.tree_decoding import TREE_SETTINGS

REPO = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("drafter_dir", type=Path)
    parser.add_argument("--target", default=DEFAULT_TARGET)
    parser.add_argument("--draft-length", type=int, required=True)
    parser.add_argument("--confidence-threshold", type=float, default=0.0)
    parser.add_argument("--head-mode", choices=("full", "router", "shortlist"), help="Default: keep the drafter's.")
    parser.add_argument("--prompt-lookup-tokens", type=int, default=None, help="Hybrid copies (default: off).")
    parser.add_argument("--copy-confidence", type=float, default=0.0)
    parser.add_argument("--copy-only-after", type=int, help="Copy-only rounds (default: keep the drafter's).")
    parser.add_argument("--copy-only-tokens", type=int, help="Copy-only round length (default: keep the drafter's).")
    parser.add_argument("--tree-total-tokens", type=int, help="Tree decoding size (default: keep the drafter's).")
    parser.add_argument("--tree-depth", type=int, help="Tree decoding depth (default: keep the drafter's).")
    parser.add_argument("--tree-top-k", type=int, help="Tree decoding top-k (default: keep the drafter's).")
    parser.add_argument(
        "--tree-confidence-threshold", type=float, help="Tree decoding level threshold (default: keep the drafter's)."
    )
    parser.add_argument(
        "--tree-unmatched-copy-tokens", type=int, help="Tree copy-branch cap (default: keep the drafter's)."
    )
    parser.add_argument("--bench-json", type=Path, nargs="*", default=[], help="coral-hf bench --json reports.")
    args = parser.parse_args()

    target, _ = load_target(args.target)
    drafter = load_drafter(str(args.drafter_dir), target=target)
    drafter.config.draft_length = args.draft_length
    drafter.config.draft_confidence_threshold = args.confidence_threshold
    drafter.generation_config.num_assistant_tokens = args.draft_length
    drafter.generation_config.assistant_confidence_threshold = args.confidence_threshold
    drafter.config.prompt_lookup_tokens = args.prompt_lookup_tokens
    drafter.config.copy_confidence = args.copy_confidence
    drafter.generation_config.prompt_lookup_num_tokens = args.prompt_lookup_tokens
    drafter.generation_config.copy_confidence = args.copy_confidence
    if args.copy_only_after is not None:
        drafter.config.copy_only_after = args.copy_only_after
    drafter.generation_config.copy_only_after = drafter.config.copy_only_after
    if args.copy_only_tokens is not None:
        drafter.config.copy_only_tokens = args.copy_only_tokens
    drafter.generation_config.copy_only_tokens = drafter.config.copy_only_tokens
    if args.head_mode is not None:
        drafter.set_head_mode(args.head_mode)
    for name in TREE_SETTINGS:
        value = getattr(args, name)
        value = getattr(drafter.config, name) if value is None else value
        setattr(drafter.config, name, value)
        setattr(drafter.generation_config, name, value)
    results = {}
    for path in args.bench_json:
        report = json.loads(path.read_text())
        settings = report["settings"]
        turns = sum(item["turns"] for item in report.get("per_prompt", []))
        size = f"{report['prompts']} prompts" + (f", {turns} turns" if turns > report["prompts"] else "")
        name = (
            f"{settings['prompts']} ({size}, {settings['dtype']}, T={settings['temperature']}, "
            f"{settings['max_new_tokens']} new tokens)"
        )
        # The modes that match the shipped settings: chain (with copies when shipped with them), and the tree.
        chain = report.get("hybrid") if args.prompt_lookup_tokens else report
        tree = report.get("tree_hybrid") if args.prompt_lookup_tokens else report.get("tree")
        for suffix, numbers in (("", chain), (", tree decoding", tree)):
            if numbers is None:
                continue
            decode_speedup = numbers.get("decode_speedup_median")  # reports before the prefill split lack it
            results[name.replace(")", suffix + ")")] = {
                "tau": round(numbers["tau"], 3),
                "speedup": round(numbers["speedup_median"], 3),
                **({"decode_speedup": round(decode_speedup, 3)} if decode_speedup is not None else {}),
                "draft_length": report["draft_length"],
                "device": f"{report['machine']['cpu']}, {report['machine']['torch_threads']} thread(s)",
            }
    drafter.config.eval_results = results or None

    destination = REPO / "coral_hf" / "drafters" / args.target
    if destination.exists():
        shutil.rmtree(destination)
    drafter.to(torch.bfloat16).save_pretrained(destination)
    write_model_card(drafter, destination)
    shutil.copy(destination / "README.md", REPO / "model_cards" / f"{args.target}-coral-drafter.md")
    print(f"Shipped drafter written to {destination}")


if __name__ == "__main__":
    main()
