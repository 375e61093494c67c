"""The differences between the transformers releases coral_hf supports (5.23 to 5.25), in one place.

transformers 5.24 renamed a model's cache keyword from `past_key_values` to `cache`: in `forward` (the old name still
works until 5.40, with a `FutureWarning`), in the outputs of `generate`, and in the keyword assisted decoding hands
its assistant (here the drafter) between rounds.
"""

from __future__ import annotations

from typing import Any

from transformers.generation.utils import GenerateDecoderOnlyOutput

CACHE_KWARG = "cache" if "cache" in GenerateDecoderOnlyOutput.__dataclass_fields__ else "past_key_values"


def cache_kwargs(cache: Any) -> dict[str, Any]:
    """`{keyword: cache}` under the keyword this transformers release takes, for a model forward or an output."""
    return {CACHE_KWARG: cache}


def passed_cache(kwargs: dict[str, Any]) -> Any:
    """The cache in keyword arguments as a caller passed them, under either name (`None` if there is none)."""
    cache = kwargs.get("cache")
    return kwargs.get("past_key_values") if cache is None else cache
