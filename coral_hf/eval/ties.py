"""Numerical ties in low precision: when plain and speculative greedy decoding may part by rounding alone.

In bfloat16 / float16 the target's logits depend on the shape of the computation: a 1-token step, a k-token
verification and one forward over the whole prefix round differently, and so do the KV caches those shapes leave
behind. Where the target's two best tokens are close, plain greedy and speculative greedy can each follow their own
argmax and still both be correct greedy decodings of the same model. float32 stays strict: no divergence is a tie.

Two tests, the second only run when the first fails:

- the **dtype bound**: the plain call ranks the pair within two units in the last place of the dtype at the
  logits' magnitude (`is_numerical_tie`; each logit may round by one unit the other way);
- the **target's own shapes**: the target evaluates the same prefix the ways speculative decoding does (one full
  forward; the prompt's prefill followed by the generated prefix in chunks of k tokens, as verification rounds of k
  tokens build the cache) and at least one of those evaluations ranks the pair within the bound or the other way
  round (`pair_gaps_by_shape`). The order of the pair is then not a property of the model but of the shape it
  was computed in, which a speculative method cannot avoid changing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from transformers import PreTrainedModel
from transformers.cache_utils import DynamicCache

from ..transformers_compat import cache_kwargs

#: Verification widths the shapes test repeats: the chain (5 drafted + 1), tree (8, 12 with a copy) and prompt
#: lookup (10 + 1) rounds of the benchmark all fall in this range.
CHUNK_SIZES = (2, 3, 4, 6, 8, 12, 16)


def logit_resolution(value: float, dtype: torch.dtype) -> float:
    """The spacing of `dtype` numbers at magnitude `value` (one unit in the last place)."""
    magnitude = max(abs(value), torch.finfo(dtype).tiny)
    return torch.finfo(dtype).eps * 2.0 ** math.floor(math.log2(magnitude))


def is_low_precision(dtype: torch.dtype) -> bool:
    return dtype not in (torch.float32, torch.float64)


def is_numerical_tie(top1: float, top2: float, dtype: torch.dtype) -> bool:
    """Whether two logits lie within two units in the last place of `dtype` at their magnitude (float32: never)."""
    if not is_low_precision(dtype):
        return False
    return top1 - top2 <= 2 * logit_resolution(max(abs(top1), abs(top2)), dtype)


def _chunks(length: int, size: int) -> list[tuple[int, int]]:
    """`[start, end)` spans of `size` tokens covering `range(length)`, the first one shorter when it must be, so
    the last span ends at the last token (the prediction being checked comes from a full k-token forward)."""
    first = length % size or size
    return [(max(0, end - size), end) for end in range(first, length + 1, size)]


@torch.no_grad()
def pair_gaps_by_shape(
    target: PreTrainedModel,
    input_ids: torch.Tensor,
    generated: Sequence[int],
    plain_token: int,
    other_token: int,
    chunk_sizes: Sequence[int] = CHUNK_SIZES,
) -> dict[str, float]:
    """Plain token minus other token logit after `input_ids` + `generated`, in each computation shape.

    Returns `{"full forward": gap, "chunks of 2": gap, ...}`: one forward over prompt and prefix, and, for each k,
    the prompt's prefill followed by the generated prefix in k-token forwards (the last one ending at the
    prediction), each with its own fresh cache. Costs about `len(generated) * sum(1 / k)` target forwards.
    """
    prefix = torch.tensor([list(generated)], dtype=input_ids.dtype, device=input_ids.device)

    def gap(logits: torch.Tensor) -> float:
        row = logits[0, -1].float()
        return float(row[plain_token] - row[other_token])

    gaps = {"full forward": gap(target(input_ids=torch.cat([input_ids, prefix], dim=1), use_cache=False).logits)}
    if prefix.shape[1] == 0:
        return gaps  # the first new token: every shape is the prompt's prefill
    for size in chunk_sizes:
        cache = DynamicCache()
        logits = target(input_ids=input_ids, use_cache=True, logits_to_keep=1, **cache_kwargs(cache)).logits
        for start, end in _chunks(prefix.shape[1], size):
            logits = target(
                input_ids=prefix[:, start:end], use_cache=True, logits_to_keep=1, **cache_kwargs(cache)
            ).logits
        gaps[f"chunks of {size}"] = gap(logits)
    return gaps


__all__ = ["CHUNK_SIZES", "is_low_precision", "is_numerical_tie", "logit_resolution", "pair_gaps_by_shape"]
