"""Target features for drafter training: computed online by the frozen target, or read from an on-disk cache.

The drafter learns from the target's post-norm last hidden states (the tensor that feeds the target's LM head). They
can be computed in the training process at every step (`compute_target_features`, no extra disk, one target forward
per batch and epoch) or once, ahead of training, into a feature cache (`build_feature_cache`): epochs after the
first, evaluation passes and hyper-parameter sweeps then cost only the drafter.

Cache layout (`cache_dir/`):

- `manifest.json`: what the cache was built from (format version, target fingerprint, a hash of the tokenized data,
  `max_length`, dtype, hidden size, shard layout). A cache whose manifest does not match the current target, data or
  settings is refused (`StaleFeatureCacheError`), never silently reused.
- `shard-00000-of-00012.safetensors`, ...: `examples_per_shard` consecutive examples each, stored flat: `input_ids`
  `[N]` (int32), `loss_mask` `[N]` (uint8), `features` `[N, hidden]` (bf16 or fp16) and `offsets` `[examples + 1]`,
  N being the shard's token count. Every token's feature is stored, so any loss mask or unroll depth can be used.

Each shard is written to a temporary file and renamed into place, so a shard that exists is complete. Building is
resumable: after an interruption, rerunning `build_feature_cache` keeps the finished shards and computes the rest.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ..target_utils import decoder_stack, hook_layer_outputs, target_fingerprint, unwrap_target
from .data import CoralDataCollator

logger = logging.getLogger(__name__)

CACHE_FORMAT_VERSION = 1
MANIFEST_NAME = "manifest.json"
_CACHE_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}
# Manifest entries that must match for a cache to be reused; the others are informational.
_IDENTITY_KEYS = (
    "format_version",
    "target_sha256",
    "data_sha256",
    "num_examples",
    "max_length",
    "dtype",
    "hidden_size",
    "examples_per_shard",
)


class StaleFeatureCacheError(ValueError):
    """Raised when a feature cache was built for another target, other data or other settings."""


@torch.no_grad()
def compute_target_features(
    target: nn.Module, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """The target's post-norm last hidden states `[batch, T, hidden]` for `input_ids`, without gradients.

    Only the decoder stack runs (no LM head, no cache). The target is used in eval mode (no dropout) and restored to
    its previous mode afterwards. With right padding the features of real tokens do not depend on the padding.
    """
    model = unwrap_target(target)
    was_training = model.training
    model.eval()
    try:
        output = decoder_stack(model)(input_ids=input_ids, attention_mask=attention_mask, use_cache=False)
    finally:
        model.train(was_training)
    return output.last_hidden_state


def compute_fused_target_features(
    target: nn.Module, input_ids: torch.LongTensor, attention_mask: torch.Tensor | None, layers: Sequence[int]
) -> tuple[torch.Tensor, torch.Tensor]:
    """`compute_target_features` and, from the same forward, the outputs of the target's decoder `layers`:
    `[batch, T, len(layers), hidden]`, what the recorder of a drafter with `fused_feature_layers` reads during
    generation."""
    outputs: dict[int, torch.Tensor] = {}
    handles = hook_layer_outputs(target, layers, outputs.__setitem__)
    try:
        features = compute_target_features(target, input_ids, attention_mask)
    finally:
        for handle in handles:
            handle.remove()
    return features, torch.stack([outputs[slot] for slot in range(len(layers))], dim=2)


def tokenized_data_hash(dataset: Any) -> str:
    """SHA-256 of the tokenized examples (`input_ids` and `loss_mask` of each, in order).

    Identifies the data a feature cache was built from: another tokenizer, chat template, `max_length`, sample or
    order gives another hash.
    """
    digest = hashlib.sha256()
    for index in range(len(dataset)):
        example = dataset[index]
        for key in ("input_ids", "loss_mask"):
            values = torch.as_tensor(example[key], dtype=torch.int64)
            digest.update(f"{key}:{values.numel()}:".encode())
            digest.update(values.numpy().tobytes())
    return digest.hexdigest()


def _shard_name(index: int, num_shards: int) -> str:
    return f"shard-{index:05d}-of-{num_shards:05d}.safetensors"


def _write_atomically(path: Path, write: Callable[[Path], Any]) -> None:
    """Call `write(temporary_path)`, then rename the result to `path` (a reader never sees a partial file)."""
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def _manifest_problems(expected: dict[str, Any], found: dict[str, Any]) -> list[str]:
    labels = {"target_sha256": "target", "data_sha256": "tokenized data"}
    problems = []
    for key in _IDENTITY_KEYS:
        if found.get(key) != expected[key]:
            if key in labels:
                problems.append(f"{labels[key]} differs (cache built for another {labels[key]})")
            else:
                problems.append(f"{key}: cache has {found.get(key)!r}, expected {expected[key]!r}")
    return problems


def build_feature_cache(
    target: nn.Module,
    dataset: Any,
    cache_dir: str | os.PathLike,
    max_length: int | None = None,
    dtype: torch.dtype | str = torch.bfloat16,
    examples_per_shard: int = 256,
    batch_size: int = 8,
    progress: bool = True,
) -> FeatureCacheDataset:
    """Compute the target's features for every token of `dataset` into `cache_dir`, or reuse a matching cache.

    Args:
        target: the frozen target model (on the device to compute on).
        dataset: tokenized examples with `input_ids` and `loss_mask` (e.g. from `build_training_dataset`).
        cache_dir: directory of the cache (created if missing).
        max_length: the `max_length` the data was tokenized with (recorded and checked); default: the longest
            example.
        dtype: storage precision, `torch.bfloat16` (default, the target's range) or `torch.float16`.
        examples_per_shard: examples per safetensors file; one interruption loses at most one shard of work.
        batch_size: examples per target forward (sorted by length within a shard to limit padding).
        progress: show a progress bar (on the main process).

    With several processes (`accelerate launch`, `torchrun`), every process must call this function: each computes
    every n-th shard, the main process writes the manifest, and all wait for each other before opening the cache.

    Returns:
        The cache as a `FeatureCacheDataset`.

    Raises:
        StaleFeatureCacheError: `cache_dir` holds a cache of another target, other data or other settings.
    """
    dtype_name = str(dtype).removeprefix("torch.")
    if dtype_name not in _CACHE_DTYPES:
        raise ValueError(f"Feature cache dtype must be one of {sorted(_CACHE_DTYPES)}, got {dtype_name!r}.")
    if examples_per_shard < 1 or batch_size < 1:
        raise ValueError("examples_per_shard and batch_size must be positive.")
    model = unwrap_target(target)
    lengths = [len(dataset[index]["input_ids"]) for index in range(len(dataset))]
    if not lengths:
        raise ValueError("Cannot build a feature cache of an empty dataset.")
    longest = max(lengths)
    if max_length is not None and longest > max_length:
        raise ValueError(f"The dataset has an example of {longest} tokens, longer than max_length={max_length}.")
    num_shards = -(-len(lengths) // examples_per_shard)
    fingerprint = target_fingerprint(model)
    expected = {
        "format_version": CACHE_FORMAT_VERSION,
        "target_sha256": fingerprint["sha256"],
        "data_sha256": tokenized_data_hash(dataset),
        "num_examples": len(lengths),
        "max_length": max_length if max_length is not None else longest,
        "dtype": dtype_name,
        "hidden_size": model.config.get_text_config().hidden_size,
        "examples_per_shard": examples_per_shard,
        "num_shards": num_shards,
        "num_tokens": sum(lengths),
        "target_name_or_path": getattr(model.config, "_name_or_path", None) or None,
        "target_fingerprint": fingerprint,
    }
    state = PartialState()
    cache_dir = Path(cache_dir)
    manifest_path = cache_dir / MANIFEST_NAME
    if manifest_path.is_file():
        found = json.loads(manifest_path.read_text(encoding="utf-8"))
        problems = _manifest_problems(expected, found)
        if problems:
            raise StaleFeatureCacheError(
                f"The feature cache in {cache_dir} does not match this run and cannot be reused:\n  - "
                + "\n  - ".join(problems)
                + "\nDelete the directory or choose another cache directory to rebuild it."
            )
    elif any(cache_dir.glob("shard-*.safetensors")):
        raise StaleFeatureCacheError(
            f"{cache_dir} holds feature shards but no {MANIFEST_NAME}: nothing tells what they were computed from. "
            "Delete the directory or choose another cache directory."
        )
    elif state.is_main_process:
        cache_dir.mkdir(parents=True, exist_ok=True)
        # Written before any shard: a partial cache already says what it belongs to, so resuming can check it.
        _write_atomically(manifest_path, lambda path: path.write_text(json.dumps(expected, indent=2) + "\n"))
    state.wait_for_everyone()

    # Each process owns every n-th shard, so it alone may clear that shard's leftovers of an interrupted run.
    owned = range(state.process_index, num_shards, state.num_processes)
    todo = []
    for index in owned:
        path = cache_dir / _shard_name(index, num_shards)
        for leftover in cache_dir.glob(f".{path.name}.tmp-*"):
            leftover.unlink()
        if not path.is_file():
            todo.append(index)
    if len(todo) < len(owned):
        done = len(owned) - len(todo)
        logger.info("Feature cache %s: %d of %d shards already complete.", cache_dir, done, len(owned))
    device = model.get_input_embeddings().weight.device
    storage_dtype = _CACHE_DTYPES[dtype_name]
    total = sum(min(examples_per_shard, len(lengths) - index * examples_per_shard) for index in todo)
    show = progress and bool(todo) and state.is_local_main_process
    with tqdm(total=total, desc=f"Target features -> {cache_dir.name}", unit="ex", disable=not show) as bar:
        for index in todo:
            indices = range(index * examples_per_shard, min((index + 1) * examples_per_shard, len(lengths)))
            tensors = _compute_shard(model, dataset, indices, batch_size, device, storage_dtype, bar)
            metadata = {"format_version": str(CACHE_FORMAT_VERSION), "num_examples": str(len(indices))}
            path = cache_dir / _shard_name(index, num_shards)
            _write_atomically(path, partial(save_file, tensors, metadata=metadata))
    state.wait_for_everyone()
    return FeatureCacheDataset(cache_dir, expected=expected)


def _compute_shard(
    model: nn.Module,
    dataset: Any,
    indices: Sequence[int],
    batch_size: int,
    device: torch.device,
    storage_dtype: torch.dtype,
    bar: tqdm,
) -> dict[str, torch.Tensor]:
    examples = [dataset[index] for index in indices]
    features: list[torch.Tensor | None] = [None] * len(examples)
    by_length = sorted(range(len(examples)), key=lambda i: len(examples[i]["input_ids"]))
    for start in range(0, len(by_length), batch_size):
        batch = by_length[start : start + batch_size]
        length = max(len(examples[i]["input_ids"]) for i in batch)
        input_ids = torch.zeros((len(batch), length), dtype=torch.long)
        attention_mask = torch.zeros((len(batch), length), dtype=torch.long)
        for row, i in enumerate(batch):
            ids = torch.as_tensor(examples[i]["input_ids"], dtype=torch.long)
            input_ids[row, : len(ids)] = ids
            attention_mask[row, : len(ids)] = 1
        hidden = compute_target_features(model, input_ids.to(device), attention_mask.to(device))
        hidden = hidden.to(device="cpu", dtype=storage_dtype)
        for row, i in enumerate(batch):
            features[i] = hidden[row, : len(examples[i]["input_ids"])].clone()
        bar.update(len(batch))
    lengths = torch.tensor([0] + [len(example["input_ids"]) for example in examples])
    return {
        "input_ids": torch.cat([torch.as_tensor(e["input_ids"], dtype=torch.int32) for e in examples]),
        "loss_mask": torch.cat([torch.as_tensor(e["loss_mask"], dtype=torch.uint8) for e in examples]),
        "features": torch.cat(features),
        "offsets": lengths.cumsum(0),
    }


class FeatureCacheDataset(Dataset):
    """A map-style dataset over a feature cache: `input_ids`, `loss_mask` and `features` per example.

    Shards are memory-mapped on first use (in each DataLoader worker), so opening a large cache is instant and only
    the examples read are loaded.

    Args:
        cache_dir: a directory written by `build_feature_cache`.
        expected: the manifest the caller expects (as computed by `build_feature_cache`); a mismatch raises
            `StaleFeatureCacheError`. Without it, the cache is only checked for completeness.

    Raises:
        FileNotFoundError: the cache has no manifest or misses shards (its building was interrupted: rerun
            `build_feature_cache` to finish it).
    """

    def __init__(self, cache_dir: str | os.PathLike, expected: dict[str, Any] | None = None):
        self.cache_dir = Path(cache_dir)
        manifest_path = self.cache_dir / MANIFEST_NAME
        if not manifest_path.is_file():
            raise FileNotFoundError(f"{self.cache_dir} is not a feature cache (no {MANIFEST_NAME}).")
        self.manifest: dict[str, Any] = json.loads(manifest_path.read_text(encoding="utf-8"))
        if self.manifest.get("format_version") != CACHE_FORMAT_VERSION:
            raise StaleFeatureCacheError(
                f"{self.cache_dir} uses cache format {self.manifest.get('format_version')}, this version reads "
                f"{CACHE_FORMAT_VERSION}: delete it to rebuild it."
            )
        if expected is not None and (problems := _manifest_problems(expected, self.manifest)):
            raise StaleFeatureCacheError(f"Feature cache {self.cache_dir} does not match: {'; '.join(problems)}")
        num_shards = self.manifest["num_shards"]
        self._paths = [self.cache_dir / _shard_name(index, num_shards) for index in range(num_shards)]
        missing = [path.name for path in self._paths if not path.is_file()]
        if missing:
            raise FileNotFoundError(
                f"The feature cache in {self.cache_dir} is incomplete ({len(missing)} of {num_shards} shards missing, "
                f"e.g. {missing[0]}); rerun `build_feature_cache` (or the training command) to finish it."
            )
        self._shards: dict[int, tuple[Any, torch.Tensor]] = {}

    def __len__(self) -> int:
        return self.manifest["num_examples"]

    def _shard(self, index: int) -> tuple[Any, torch.Tensor]:
        if index not in self._shards:
            handle = safe_open(self._paths[index], framework="pt")
            self._shards[index] = (handle, handle.get_tensor("offsets"))
        return self._shards[index]

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for a feature cache of {len(self)} examples")
        shard, local = divmod(index, self.manifest["examples_per_shard"])
        handle, offsets = self._shard(shard)
        start, end = offsets[local].item(), offsets[local + 1].item()
        return {
            "input_ids": handle.get_slice("input_ids")[start:end].long(),
            "loss_mask": handle.get_slice("loss_mask")[start:end].long(),
            "features": handle.get_slice("features")[start:end],
        }

    def __getstate__(self) -> dict[str, Any]:  # open file handles do not cross process boundaries
        return {**self.__dict__, "_shards": {}}


@dataclass
class CoralFeatureCollator(CoralDataCollator):
    """`CoralDataCollator` that also right-pads cached `features` (`[T, hidden]` per example) when present.

    Batches of a `FeatureCacheDataset` get a `features` tensor `[batch, T, hidden]` (zeros on padding, stored
    precision); batches without features are collated exactly like `CoralDataCollator` does.
    """

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = super().__call__(features)
        if "features" not in features[0]:
            return batch
        first = features[0]["features"]
        padded = first.new_zeros((len(features), batch["input_ids"].shape[1], first.shape[-1]))
        for row, feature in enumerate(features):
            padded[row, : feature["features"].shape[0]] = feature["features"]
        batch["features"] = padded
        return batch
