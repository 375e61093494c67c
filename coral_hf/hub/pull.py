"""Pulling a drafter from the Hub: only the files a drafter needs (never a pickle), checked against its target.

Works offline from the cache (`HF_HUB_OFFLINE=1`).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi
from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError
from torch import nn

from ..modeling_coral import CoralDrafter
from ..target_utils import CoralTargetMismatchError
from .card import CARD_NAME
from .safety import (
    DRAFTER_FILE_PATTERNS,
    LIBRARY_NAME,
    _clear_hub_error,
    _describe,
    _matches,
    _weight_files,
    check_safetensors_only,
)


def download_drafter(
    repo_id: str,
    *,
    revision: str | None = None,
    output_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
) -> Path:
    """Download a drafter's files (config, generation config, safetensors, card) and return their directory.

    Only `DRAFTER_FILE_PATTERNS` and the card are fetched: a pickle file in the repo is never downloaded, and a
    repo whose weights exist only as a pickle is refused with `UnsafeCheckpointError`. With `output_dir`, the files
    are written there; otherwise the Hub cache directory (`HF_HOME`) is returned. Offline (`HF_HUB_OFFLINE=1` or
    `local_files_only=True`), the cached snapshot is used.
    """
    if Path(repo_id).is_dir():
        check_safetensors_only(repo_id)
        return _copy_drafter_files(Path(repo_id), output_dir)

    check_safetensors_only(repo_id, revision=revision, token=token, local_files_only=local_files_only)
    api = HfApi(token=token, library_name=LIBRARY_NAME)
    try:
        # Always through the cache (not `local_dir`), so that a later offline pull finds the files.
        snapshot = api.snapshot_download(
            repo_id,
            revision=revision,
            allow_patterns=[*DRAFTER_FILE_PATTERNS, CARD_NAME],
            local_files_only=local_files_only,
        )
    except (RepositoryNotFoundError, RevisionNotFoundError, EntryNotFoundError) as error:
        raise _clear_hub_error(error, repo_id, revision) from error
    directory = Path(snapshot)
    if not (directory / "config.json").is_file() or not _weight_files(os.listdir(directory)):
        raise FileNotFoundError(
            f"The {_describe(repo_id, revision)} (in {directory}) lacks config.json or model.safetensors."
        )
    return _copy_drafter_files(directory, output_dir)


def _copy_drafter_files(directory: Path, output_dir: str | os.PathLike | None) -> Path:
    """Copy the drafter files and card of `directory` to `output_dir` (if given); returns where they are."""
    if output_dir is None:
        return directory
    output = Path(output_dir)
    output.mkdir(parents=True, exist_ok=True)
    for path in sorted(directory.iterdir()):
        if path.is_file() and (_matches(path.name, DRAFTER_FILE_PATTERNS) or path.name == CARD_NAME):
            shutil.copyfile(path, output / path.name)  # follows the cache's symlinks: real files in output_dir
    return output


def pull_drafter(
    repo_id: str,
    *,
    target: nn.Module,
    revision: str | None = None,
    output_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
    **from_pretrained_kwargs: Any,
) -> CoralDrafter:
    """Download a drafter from the Hub (or the cache), check it belongs to `target`, and attach it.

    Args:
        repo_id: Hub repo id (a local drafter directory works too).
        target: the model to draft for; a mismatch raises `CoralTargetMismatchError` naming what differs.
        revision: branch, tag or commit (default `main`).
        output_dir: also write the drafter files and its card (README.md) to this directory.
        token: Hub token for private repos (default: `HF_TOKEN` / the stored login).
        local_files_only: use the cache only (also implied by `HF_HUB_OFFLINE=1`).
        from_pretrained_kwargs: passed to `CoralDrafter.from_pretrained` (e.g. `dtype`).
    """
    directory = download_drafter(
        repo_id, revision=revision, output_dir=output_dir, token=token, local_files_only=local_files_only
    )
    try:
        drafter = CoralDrafter.from_pretrained(directory, target=target, **from_pretrained_kwargs)
    except CoralTargetMismatchError as error:
        raise CoralTargetMismatchError(f"Cannot attach the {_describe(repo_id, revision)}: {error}") from error
    drafter.config._name_or_path = repo_id
    return drafter


__all__ = ["download_drafter", "pull_drafter"]
