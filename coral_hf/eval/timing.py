"""Draft-step timing: what one drafted token costs (the drafter's layer, then its LM head), measured interleaved."""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping
from typing import Any

import torch
from transformers.cache_utils import DynamicCache

from ..modeling_coral import CoralDrafter


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@torch.no_grad()
def compare_draft_steps(
    variants: Mapping[str, tuple[CoralDrafter, Mapping[str, Any]]],
    context_length: int = 256,
    repetitions: int = 100,
    warmup: int = 10,
    num_inputs: int = 64,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """Time one draft step of several drafters / head settings, interleaved, on the same machine in the same run.

    A draft step is what [`CoralCandidateGenerator`] does per drafted token: one drafter forward on a single new
    position after `context_length` cached positions (the layer), then `compute_logits` on its output (the head).
    Variants run round-robin (rotating the order each repetition), so machine noise hits all of them alike; each
    step's cache entry is cropped again so the context stays fixed. Each repetition feeds another of
    `num_inputs` random (token, feature) pairs, so a router's active groups change from step to step as in real
    drafting instead of staying hot in the CPU cache.

    Args:
        variants: name -> (attached drafter, keyword arguments of `drafter.set_head_mode`, e.g.
            `{"mode": "router", "active_groups": 4}`; `{}` keeps the drafter's current setting). One drafter may
            appear in several variants; its head setting is restored afterwards.
        context_length: cached positions before the timed step.
        repetitions: timed steps per variant (after `warmup` untimed ones).
        num_inputs: distinct step inputs cycled through.
        seed: seed of the random context and inputs.

    Returns:
        name -> medians in milliseconds: `draft_step_ms` (layer + head), `layer_ms` and `lm_head_ms`.
    """
    generator = torch.Generator().manual_seed(seed)
    states = {}
    for name, (drafter, _) in variants.items():
        vocab_size, hidden_size = drafter.config.target_vocab_size, drafter.config.target_hidden_size
        ids = torch.randint(vocab_size, (1, context_length + num_inputs), generator=generator).to(drafter.device)
        features = torch.randn(1, context_length + num_inputs, hidden_size, generator=generator)
        features = features.to(drafter.device, drafter.dtype)
        cache = DynamicCache()
        drafter(
            input_ids=ids[:, :context_length],
            hidden_states=features[:, :context_length],
            past_key_values=cache,
            use_cache=True,
        )
        inputs = [
            (ids[:, i : i + 1], features[:, i : i + 1]) for i in range(context_length, context_length + num_inputs)
        ]
        position = torch.tensor([[context_length]], device=drafter.device)
        states[name] = (cache, inputs, position)
    drafters = {id(drafter): drafter for drafter, _ in variants.values()}
    saved = [(drafter, drafter.head_mode, drafter.config.active_groups) for drafter in drafters.values()]
    times: dict[str, dict[str, list[float]]] = {name: {"step": [], "layer": [], "head": []} for name in variants}
    names = list(variants)
    try:
        for repetition in range(warmup + repetitions):
            shift = repetition % len(names)
            for name in names[shift:] + names[:shift]:
                drafter, settings = variants[name]
                if settings:
                    drafter.set_head_mode(**settings)
                cache, inputs, position = states[name]
                token, feature = inputs[repetition % num_inputs]
                _synchronize(drafter.device)
                start = time.perf_counter()
                output = drafter(
                    input_ids=token,
                    hidden_states=feature,
                    position_ids=position,
                    past_key_values=cache,
                    use_cache=True,
                )
                _synchronize(drafter.device)
                middle = time.perf_counter()
                drafter.compute_logits(output.last_hidden_state[:, -1])
                _synchronize(drafter.device)
                end = time.perf_counter()
                cache.crop(-1)
                if repetition >= warmup:
                    times[name]["step"].append(end - start)
                    times[name]["layer"].append(middle - start)
                    times[name]["head"].append(end - middle)
    finally:
        for drafter, head_mode, active_groups in saved:
            drafter.config.head_mode, drafter.config.active_groups = head_mode, active_groups
    return {
        name: {
            "draft_step_ms": 1e3 * statistics.median(samples["step"]),
            "layer_ms": 1e3 * statistics.median(samples["layer"]),
            "lm_head_ms": 1e3 * statistics.median(samples["head"]),
        }
        for name, samples in times.items()
    }


def time_draft_step(
    drafter: CoralDrafter, context_length: int = 256, repetitions: int = 100, warmup: int = 10
) -> dict[str, float]:
    """Median time of one draft step of `drafter` in its current head mode: `draft_step_ms`, `layer_ms`,
    `lm_head_ms` (see [`compare_draft_steps`], which interleaves several settings for side-by-side ratios)."""
    timings = compare_draft_steps(
        {"draft": (drafter, {})}, context_length=context_length, repetitions=repetitions, warmup=warmup
    )
    return timings["draft"]


__all__ = ["compare_draft_steps", "time_draft_step"]
