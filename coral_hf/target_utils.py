"""What a drafter needs to know about its target: where its layers are, and whether it is the right target."""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle
from transformers import PreTrainedModel

from .configuration_coral import CoralConfig
from .packed_linear import packable_dtype

logger = logging.getLogger(__name__)

_PROBE_ROWS = 8
_PROBE_DIMS = 8
# Cosine similarity above which two fingerprints are the same target (bf16 / Q4 copies of one model stay > 0.999,
# unrelated weights of the same shape are near 0).
_PROBE_MIN_SIMILARITY = 0.98


class CoralTargetMismatchError(ValueError):
    """Raised when a drafter is attached to a target it was not built for."""


def unwrap_target(target: nn.Module) -> PreTrainedModel:
    """The transformers model under PEFT / other wrappers (`get_base_model()` where offered)."""
    while hasattr(target, "get_base_model"):
        inner = target.get_base_model()
        if inner is target:
            break
        target = inner
    return target


def decoder_stack(target: nn.Module) -> nn.Module:
    """The target's decoder (e.g. `LlamaModel`): its `last_hidden_state` is the post-norm feature the LM head reads."""
    model = unwrap_target(target)
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    if decoder is None:
        decoder = getattr(model, model.base_model_prefix, None)
    if decoder is None or decoder is model:
        raise TypeError(
            f"Cannot find the decoder stack of {type(model).__name__}; CORAL drafters need a causal LM with a "
            "separate base model and LM head (e.g. LlamaForCausalLM)."
        )
    return decoder


def decoder_layers(target: nn.Module) -> nn.ModuleList:
    """The target's decoder layers, in order (their outputs are the residual stream after each layer)."""
    decoder = decoder_stack(target)
    layers = getattr(decoder, "layers", None)
    if not isinstance(layers, nn.ModuleList):
        raise TypeError(f"Cannot find the decoder layers of {type(decoder).__name__} (expected a `layers` list).")
    return layers


def hook_layer_outputs(
    target: nn.Module, layers: Sequence[int], keep: Callable[[int, torch.Tensor], None]
) -> list[RemovableHandle]:
    """Forward hooks on the target's decoder `layers` that call `keep(slot, hidden)` with each one's output hidden
    states, `slot` being the layer's place in `layers`. The recorder (generation) and
    `compute_fused_target_features` (training) read fused layers through this, so both see the same tensors."""

    def hook_for(slot: int) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            keep(slot, output[0] if isinstance(output, tuple) else output)

        return hook

    modules = decoder_layers(target)
    return [modules[index].register_forward_hook(hook_for(slot)) for slot, index in enumerate(layers)]


def fused_layers_problem(layers: Sequence[int] | None, target: nn.Module) -> str | None:
    """Why `target` cannot provide the fused feature `layers` (an index beyond its decoder layers), or None."""
    num_layers = len(decoder_layers(target))
    if layers and max(layers) >= num_layers:
        return f"fused_feature_layers {list(layers)}: target has {num_layers} decoder layers"
    return None


def _probe_rows(weight: torch.Tensor) -> torch.Tensor:
    vocab_size = weight.shape[0]
    return torch.linspace(0, vocab_size - 1, _PROBE_ROWS).round().long()


@torch.no_grad()
def target_fingerprint(target: nn.Module) -> dict:
    """A small, precision-tolerant summary of the target's embedding and LM-head weights.

    `probe` is a fixed random projection of a few fixed rows: two copies of one model in different precisions or
    quantisations give nearly parallel probes, while another model of the same shapes does not. `sha256` hashes the
    same rows exactly, to tell "identical" from "same model, other precision".
    """
    model = unwrap_target(target)
    generator = torch.Generator().manual_seed(0)
    probe: list[float] = []
    digest = hashlib.sha256()
    weights = {"embed": model.get_input_embeddings().weight, "lm_head": model.get_output_embeddings().weight}
    if weights["lm_head"] is weights["embed"]:  # tied: one matrix
        del weights["lm_head"]
    for name, weight in weights.items():
        rows = weight[_probe_rows(weight).to(weight.device)].detach().float().cpu()
        projection = torch.randn(rows.shape[1], _PROBE_DIMS, generator=generator)
        probe.extend(round(value, 4) for value in (rows @ projection).flatten().tolist())
        digest.update(name.encode())
        digest.update(rows.numpy().tobytes())
    return {"sha256": digest.hexdigest(), "probe": probe}


def fingerprints_match(expected: dict, actual: dict) -> bool:
    """Whether two fingerprints describe the same target weights, up to precision."""
    if expected.get("sha256") == actual.get("sha256"):
        return True
    a = torch.tensor(expected["probe"], dtype=torch.float64)
    b = torch.tensor(actual["probe"], dtype=torch.float64)
    if a.shape != b.shape:
        return False
    return torch.nn.functional.cosine_similarity(a, b, dim=0).item() >= _PROBE_MIN_SIMILARITY


def check_compatible(config: CoralConfig, target: nn.Module) -> None:
    """Raise `CoralTargetMismatchError` listing every way `target` differs from the one `config` was built for."""
    model = unwrap_target(target)
    text_config = model.config.get_text_config()
    problems = []
    expected = {
        "model_type": config.target_model_type,
        "vocab_size": config.target_vocab_size,
        "hidden_size": config.target_hidden_size,
    }
    actual = {
        "model_type": text_config.model_type,
        "vocab_size": model.get_output_embeddings().weight.shape[0],
        "hidden_size": text_config.hidden_size,
    }
    for key, value in expected.items():
        if value is not None and value != actual[key]:
            problems.append(f"{key}: drafter expects {value!r}, target has {actual[key]!r}")
    fused_problem = fused_layers_problem(config.fused_feature_layers, model)
    if fused_problem:
        problems.append(fused_problem)
    if not problems and config.target_fingerprint is not None:
        if not fingerprints_match(config.target_fingerprint, target_fingerprint(model)):
            problems.append(
                "embedding / LM-head weights differ from the target the drafter was trained for "
                "(same shapes, different model)"
            )
    if problems:
        expected_name = config.target_name_or_path or "<unrecorded>"
        actual_name = getattr(model.config, "_name_or_path", "") or type(model).__name__
        raise CoralTargetMismatchError(
            f"This drafter was built for target {expected_name!r} but is being attached to {actual_name!r}:\n  - "
            + "\n  - ".join(problems)
        )


def warn_if_slow_verification(target: nn.Module) -> None:
    """Warn (once per process) when `target` runs in bfloat16 on a CPU whose oneDNN has no bf16 kernels (no AVX-512).

    There a bf16 forward over several new tokens, which every speculative round needs, costs several times a
    one-token forward (8 tokens 4x one on an AVX2-only AMD EPYC with SmolLM2-135M), so speculation is slower than
    plain bf16 `generate` (0.80-0.97x measured in every mode), while float32 speculation on the same CPU is not.
    """
    parameter = next(unwrap_target(target).parameters(), None)
    if parameter is None or parameter.dtype != torch.bfloat16 or parameter.device.type != "cpu":
        return
    if not packable_dtype(torch.bfloat16):
        _warn_slow_bf16_verification()


@functools.cache
def _warn_slow_bf16_verification() -> None:
    logger.warning(
        "The target runs in bfloat16 on a CPU without oneDNN bf16 kernels (they need AVX-512): verifying several "
        "draft tokens costs several times one token's forward here, so speculative decoding is likely slower than "
        'plain generate(). Run the target in float32 (`coral_hf.load_target(..., dtype="auto")` picks it here).'
    )
