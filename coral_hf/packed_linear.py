"""Linear layers whose weights are packed once for oneDNN: cheap multi-token forwards on CPU (inference only).

Speculative decoding pays when a target forward over k + 1 new tokens costs little more than one over a single
token. On CPU, PyTorch sends a float32 `F.linear` to MKL's sgemm: one row is a fast matrix-vector product, but
2-16 rows re-pack the whole weight matrix on every call, so a verification forward over 3 tokens costs 1.5-2x a
single token (SmolLM2-135M, 2 cores). oneDNN with the weight reordered once into its blocked layout costs about the
same for 1 to 8 rows, in float32 and bfloat16 alike, and its one-row product is no slower. `pack_linear_weights`
gives every `nn.Linear` of a model such a packed copy of its weight; the parameters, the `state_dict`, tied weights
and hooks stay as they are. The packed path is only taken where it computes the same function: a CPU input of the
weight's dtype, no autograd, and a weight unchanged since it was packed (anything else falls back to `F.linear`).
It uses PyTorch's own oneDNN operators (`torch.ops.mkldnn`, as TorchInductor does on CPU), which PyTorch does not
document as public API: `packed_linear_available()` probes them, and packing is opt-in.
"""

from __future__ import annotations

import functools

import torch
from torch import nn


@functools.cache
def packable_dtype(dtype: torch.dtype) -> bool:
    """float32 always; bfloat16 where oneDNN supports it on this CPU (it needs AVX-512 or newer)."""
    if dtype == torch.bfloat16:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    return dtype == torch.float32


def packed_linear_available(dtype: torch.dtype | None = None) -> tuple[bool, str]:
    """Whether this PyTorch build can pack linear weights for oneDNN (of `dtype`, where given, on this CPU), and why
    not where it cannot."""
    if not torch.backends.mkldnn.is_available():
        return False, "this PyTorch build has no oneDNN (mkldnn)"
    ops = torch.ops.mkldnn
    if not (hasattr(ops, "_reorder_linear_weight") and hasattr(ops, "_linear_pointwise")):
        return False, f"torch {torch.__version__} lacks torch.ops.mkldnn._linear_pointwise"
    if dtype is not None and not packable_dtype(dtype):
        if dtype == torch.bfloat16:
            return False, "oneDNN has no bfloat16 kernels on this CPU (they need AVX-512)"
        return False, f"oneDNN packing covers float32 and bfloat16, not {str(dtype).removeprefix('torch.')}"
    return True, "oneDNN packed weights (torch.ops.mkldnn)"


def require_packed_linear(dtype: torch.dtype | None = None) -> None:
    """Raise `RuntimeError` saying why where this PyTorch build cannot pack linear weights (of `dtype` on this CPU)."""
    available, reason = packed_linear_available(dtype)
    if not available:
        raise RuntimeError(f"cannot pack linear weights: {reason}")


def pack_weight(weight: torch.Tensor) -> torch.Tensor:
    """A oneDNN-packed copy of a `[out, in]` linear weight, for `packed_linear`."""
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), None)


def packed_linear(
    input: torch.Tensor, weight: torch.Tensor, packed: torch.Tensor | None, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """`F.linear(input, weight, bias)`, through `packed` (`pack_weight(weight)`) where that computes the same: a CPU
    input of the weight's dtype and no autograd; `F.linear` otherwise (or when `packed` is None)."""
    if packed is None or not _packed_applies(input, weight):
        return nn.functional.linear(input, weight, bias)
    return torch.ops.mkldnn._linear_pointwise(input, packed, None if bias is None else bias.detach(), "none", [], "")


def _packed_applies(input: torch.Tensor, weight: torch.Tensor) -> bool:
    if input.device.type != "cpu" or weight.device.type != "cpu" or input.dtype != weight.dtype:
        return False
    if not packable_dtype(weight.dtype) or input.dim() < 2:
        return False
    return not (torch.is_grad_enabled() and (input.requires_grad or weight.requires_grad))


def _weight_state(weight: torch.Tensor) -> tuple[int, int, torch.dtype]:
    """What changes when a weight is replaced or updated in place (`load_state_dict`, `.to()`, an optimizer step)."""
    try:
        version = weight._version
    except RuntimeError:  # an inference tensor (made under torch.inference_mode) has no version counter
        version = -1
    return weight.data_ptr(), version, weight.dtype


class PackedLinear(nn.Linear):
    """An `nn.Linear` that keeps a oneDNN-packed copy of its weight for inference on CPU.

    Made by `pack_linear_weights` from an existing `nn.Linear` (same parameters, same `state_dict`); turned back by
    `unpack_linear_weights`. The packed copy costs as much memory as the weight. A weight replaced or changed in place
    through the parameter (an optimizer step, `load_state_dict`, `weight.mul_()` under `no_grad`) is re-packed on the
    next forward; a write through `weight.data` (as PEFT's `merge_adapter` does) is invisible to PyTorch's version
    counter: call `pack_linear_weights` again after one.
    """

    _packed_weight: torch.Tensor
    _packed_state: tuple[int, int, torch.dtype]

    def _pack(self) -> None:
        self._packed_weight = pack_weight(self.weight)
        self._packed_state = _weight_state(self.weight)

    def __getstate__(self) -> dict:
        # oneDNN's packed tensor has no storage to copy or pickle: copies (`copy.deepcopy`, `pickle`) re-pack instead.
        state = dict(self.__dict__)
        state.pop("_packed_weight", None)
        state.pop("_packed_state", None)
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        self._pack()

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if self._packed_state != _weight_state(self.weight) and _packed_applies(input, self.weight):
            self._pack()  # the weight was replaced or updated in place since it was packed
        return packed_linear(input, self.weight, self._packed_weight, self.bias)


def pack_linear_weights(model: nn.Module) -> int:
    """Give every float32 / bfloat16 CPU `nn.Linear` in `model` a oneDNN-packed weight; returns how many (bfloat16
    layers only where oneDNN supports bf16 on this CPU).

    For inference: forwards under `torch.no_grad()` (as `generate` runs) use the packed weight, anything that needs
    gradients uses `F.linear` as before. Calling it again re-packs every layer (needed after writes through
    `weight.data`, e.g. merging a LoRA adapter); `unpack_linear_weights` undoes it. Raises `RuntimeError` where this
    PyTorch build cannot pack (see `packed_linear_available`).
    """
    require_packed_linear()
    packed = 0
    for module in model.modules():
        if type(module) is PackedLinear or (
            type(module) is nn.Linear and module.weight.device.type == "cpu" and packable_dtype(module.weight.dtype)
        ):
            module.__class__ = PackedLinear
            module._pack()
            packed += 1
    return packed


def unpack_linear_weights(model: nn.Module) -> int:
    """Turn the `PackedLinear` layers of `model` back into plain `nn.Linear`, freeing their packed copies."""
    unpacked = 0
    for module in model.modules():
        if type(module) is PackedLinear:
            del module._packed_weight, module._packed_state
            module.__class__ = nn.Linear
            unpacked += 1
    return unpacked


__all__ = [
    "PackedLinear",
    "pack_linear_weights",
    "pack_weight",
    "packable_dtype",
    "packed_linear",
    "packed_linear_available",
    "require_packed_linear",
    "unpack_linear_weights",
]
