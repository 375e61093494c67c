"""Reads the target's last hidden states during assisted generation, without extra target compute."""

from __future__ import annotations

import sys
from typing import Any

import torch
from torch import nn

from .target_utils import decoder_stack, hook_layer_outputs
from .transformers_compat import passed_cache


class TargetFeatureRecorder:
    """Forward hooks on the target's decoder that keep its post-norm features by absolute position.

    Recording is armed by the drafter's first draft call of a generation, and starts at the target's next forward.
    Each forward's start position is the target cache length before the call, so features of tokens that
    verification rejected are overwritten when the target re-processes those positions: the buffer follows the
    target's own rollback.

    A forward that starts a new sequence without being armed means the target is generating without the drafter.
    If that happens inside `generate(..., assistant_model=drafter)`, transformers has picked a mode that silently
    ignores the assistant (beam search); the recorder raises instead of letting it pass unnoticed.
    """

    def __init__(self, target: nn.Module, drafter: nn.Module):
        self._drafter = drafter
        decoder = decoder_stack(target)
        self._handles = [
            decoder.register_forward_pre_hook(self._before_forward, with_kwargs=True),
            decoder.register_forward_hook(self._after_forward, with_kwargs=True),
        ]
        fused_layers = drafter.config.fused_feature_layers or []
        self._layer_outputs: list[torch.Tensor | None] = [None] * len(fused_layers)
        self._handles += hook_layer_outputs(target, fused_layers, self._keep_layer_output)
        self._armed = False
        self._recording = False
        self._start = 0
        self.offset = 0
        self.features: torch.Tensor | None = None
        # `[1, positions, len(fused_feature_layers), hidden]`, aligned with `features`, for drafters that fuse layers.
        self.fused_features: torch.Tensor | None = None

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self.reset()

    def arm(self) -> None:
        """Record from the target's next forward on (a new generation starts)."""
        self.reset()
        self._armed = True

    def reset(self) -> None:
        self._armed = False
        self._recording = False
        self.features = None
        self.fused_features = None
        self.offset = 0

    def _before_forward(self, module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        cache = passed_cache(kwargs)
        self._start = cache.get_seq_length() if cache is not None else 0
        if self._armed:
            self._armed = False
            self._recording = True
            self.offset = self._start
        elif self._start == 0:
            self._recording = False
            self.features = self.fused_features = None
            self._refuse_ignored_assistant()

    def _keep_layer_output(self, slot: int, hidden: torch.Tensor) -> None:
        if self._recording:
            self._layer_outputs[slot] = hidden.detach()

    def _after_forward(self, module: nn.Module, args: tuple, kwargs: dict[str, Any], output: Any) -> None:
        if not self._recording:
            return
        hidden = output.last_hidden_state if hasattr(output, "last_hidden_state") else output[0]
        self.features = self._extend(self.features, hidden.detach())
        if self._layer_outputs:
            self.fused_features = self._extend(self.fused_features, torch.stack(self._layer_outputs, dim=2))
            self._layer_outputs = [None] * len(self._layer_outputs)

    def compact(self, start: int, source: torch.Tensor | None, rejected: int) -> None:
        """Follow a tree round's KV-cache compaction: the recorded positions `source` (absolute, in order) move to
        `start` onwards (None: they already are there), then the last `rejected` positions are dropped."""
        for name in ("features", "fused_features"):
            recorded = getattr(self, name)
            if recorded is None:
                continue
            if source is not None:
                begin = start - self.offset
                recorded[:, begin : begin + len(source)] = recorded[:, source - self.offset]
            if rejected:
                setattr(self, name, recorded[:, : recorded.shape[1] - rejected])

    def _extend(self, recorded: torch.Tensor | None, new: torch.Tensor) -> torch.Tensor:
        """`recorded` up to this forward's start position (rejected positions dropped), then `new`."""
        if recorded is None:
            return new
        return torch.cat([recorded[:, : self._start - self.offset], new], dim=1)

    def _refuse_ignored_assistant(self) -> None:
        frame = sys._getframe(2)
        while frame is not None:
            if frame.f_code.co_name == "generate" and frame.f_locals.get("assistant_model") is self._drafter:
                generation_config = frame.f_locals.get("generation_config")
                num_beams = getattr(generation_config, "num_beams", None)
                raise ValueError(
                    "CoralDrafter only supports greedy decoding and sampling with batch size 1; transformers would "
                    f"silently ignore the drafter in this generation mode (num_beams={num_beams}). "
                    "Use num_beams=1, or drop assistant_model for beam search."
                )
            frame = frame.f_back
