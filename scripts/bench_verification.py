"""Verification cost on this machine: one target forward over k new tokens, relative to one token, by dtype.

    python scripts/bench_verification.py --threads 2 --json docs/bench/verification.json
    python scripts/bench_verification.py --threads 2 --tree --sizes 1 4 8 16 24 32 48 64   # tree decoding's forward
    python scripts/bench_verification.py --threads 2 --weights stock packed   # MKL vs oneDNN-packed linear weights

This is what decides the best draft length (and whether bf16 pays) on a CPU: speculation gains tau tokens per target
forward, but a forward over k + 1 tokens costs more than one over 1 token. Each measurement is the median of
interleaved repetitions (every k in turn) on the embedded SmolLM2 target with a KV cache of `--context` tokens.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from transformers import DynamicCache

import coral_hf
from coral_hf.eval.bench import machine_info
from coral_hf.modeling_coral import additive_attention_mask
from coral_hf.transformers_compat import cache_kwargs
from coral_hf.tree_decoding import tree_ancestor_mask


def _tree_inputs(size: int, context: int, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Position ids and the additive 4D mask of a `size`-node binary draft tree after `context` cached tokens."""
    parents = torch.tensor([-1] + [(node - 1) // 2 for node in range(1, size)])
    depths = torch.zeros(size, dtype=torch.long)
    for node in range(1, size):
        depths[node] = depths[parents[node]] + 1
    allowed = torch.ones(size, context + size, dtype=torch.bool)
    allowed[:, context:] = tree_ancestor_mask(parents)
    return {
        "position_ids": (context + depths)[None],
        "attention_mask": additive_attention_mask(allowed, dtype)[None, None],
    }


@torch.no_grad()
def verification_costs(
    target, context: int, sizes: list[int], repetitions: int, tree: bool = False, weights: tuple[str, ...] = ("stock",)
) -> dict[str, dict[int, float]]:
    """Median ms of a forward over `size` new tokens after a `context`-token cache, per weight layout and size.

    Sizes and weight layouts (`stock`: PyTorch's default kernels; `packed`: `coral_hf.pack_linear_weights`) are
    interleaved within each repetition. With `tree`, the new tokens form a draft tree (4D mask, per-node positions),
    as `coral_hf.tree_generate` sends.
    """
    prompt = torch.randint(100, 20000, (1, context), generator=torch.Generator().manual_seed(0))
    timings = {layout: {size: [] for size in sizes} for layout in weights}
    for repetition in range(repetitions + 1):
        for layout in weights:
            if layout == "packed":
                coral_hf.pack_linear_weights(target)
            else:
                coral_hf.unpack_linear_weights(target)
            for size in sizes:
                cache = DynamicCache()
                target(input_ids=prompt, use_cache=True, **cache_kwargs(cache))
                new = torch.randint(100, 20000, (1, size))
                extra = _tree_inputs(size, context, target.dtype) if tree else {}
                start = time.perf_counter()
                target(input_ids=new, use_cache=True, logits_to_keep=size, **cache_kwargs(cache), **extra)
                if repetition:  # the first pass is warm-up
                    timings[layout][size].append((time.perf_counter() - start) * 1000)
    return {
        layout: {size: statistics.median(values) for size, values in by_size.items()}
        for layout, by_size in timings.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--context", type=int, default=300)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6, 8, 12, 16])
    parser.add_argument("--repetitions", type=int, default=10)
    parser.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--tree", action="store_true", help="Tree-shaped new tokens (4D mask), as tree decoding.")
    parser.add_argument(
        "--weights",
        nargs="+",
        choices=("stock", "packed"),
        default=["stock"],
        help="Linear weight layouts to compare (packed: coral_hf.pack_linear_weights, oneDNN).",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    report = {"context": args.context, "tree": args.tree, "machine": machine_info(torch.device("cpu")), "dtypes": {}}
    for dtype in args.dtypes:
        target, _ = coral_hf.load_target("smollm2-135m-instruct", dtype=getattr(torch, dtype))
        by_layout = verification_costs(
            target, args.context, args.sizes, args.repetitions, tree=args.tree, weights=tuple(args.weights)
        )
        for layout, costs in by_layout.items():
            key = dtype if layout == "stock" else f"{dtype}+{layout}"
            report["dtypes"][key] = {
                "ms": {size: round(ms, 2) for size, ms in costs.items()},
                "relative": {size: round(ms / costs[1], 3) for size, ms in costs.items()},
            }
            print(key, report["dtypes"][key])
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
