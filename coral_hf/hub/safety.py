"""Loading drafters safely: safetensors only, never a pickle (unpickling runs code stored in the file).

A leaf module (no import of the drafter model), so `CoralDrafter.from_pretrained` can check a source before
transformers downloads or unpickles anything.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Iterable
from pathlib import Path

from huggingface_hub import HfApi, is_offline_mode
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from ..datastore import DATASTORE_FILE

LIBRARY_NAME = "coral_hf"

# What a drafter repo needs; everything else in a repo (optimizer states, training args, ...) is left alone.
DRAFTER_FILE_PATTERNS = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "model-*-of-*.safetensors",
    "model.safetensors.index.json",
    DATASTORE_FILE,
)

# Checkpoint formats that are loaded by unpickling, i.e. by running code from the file.
PICKLE_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl", "*.pickle", "*.joblib", "*.npy", "*.npz")

_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


class UnsafeCheckpointError(ValueError):
    """Raised instead of loading a pickle checkpoint (`pytorch_model.bin`, `*.pt`, ...): unpickling runs code."""


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for pattern in patterns)


def _weight_files(names: Iterable[str]) -> list[str]:
    """Top-level safetensors files (checkpoint folders a Trainer pushes, e.g. `last-checkpoint/`, do not count)."""
    return [name for name in names if "/" not in name and name.endswith(".safetensors") and name != DATASTORE_FILE]


def _pickle_files(names: Iterable[str]) -> list[str]:
    return [name for name in names if "/" not in name and _matches(name, PICKLE_PATTERNS)]


def _refuse_pickle(where: str, pickles: list[str]) -> UnsafeCheckpointError:
    return UnsafeCheckpointError(
        f"{where} has no safetensors weights, only a pickle checkpoint ({', '.join(sorted(pickles))}). coral_hf "
        "loads drafters from safetensors only: loading a pickle runs code stored in the file. If you trust it, "
        "convert it once with `CoralDrafter.from_pretrained(path, use_safetensors=False)` followed by "
        "`save_pretrained(...)` (which writes model.safetensors), then share the converted drafter."
    )


def check_safetensors_only(
    path_or_repo_id: str | os.PathLike,
    *,
    revision: str | None = None,
    token: str | bool | None = None,
    local_files_only: bool = False,
) -> None:
    """Refuse a drafter whose weights exist only as a pickle checkpoint, before anything is downloaded or unpickled.

    Works on a local directory, or on a Hub repo id (one file-listing request; skipped offline, where only files
    cached by a safe pull can exist). `CoralDrafter.from_pretrained` can call it first: transformers would
    otherwise answer a pickle-only Hub repo by asking the Hub's conversion service to convert it.

    Raises:
        UnsafeCheckpointError: there is `pytorch_model.bin` / `*.pt` / ... but no `*.safetensors`.
        FileNotFoundError: a local directory without `config.json` or without weights; a repo without weights.
    """
    directory = Path(path_or_repo_id)
    if directory.is_dir():
        names = [p.name for p in directory.iterdir() if p.is_file()]
        if "config.json" not in names:
            raise FileNotFoundError(f"{directory} is not a drafter directory: no config.json.")
        where = f"Drafter directory {directory}"
    elif local_files_only or is_offline_mode() or not _HUB_ID_RE.match(str(path_or_repo_id)):
        return  # nothing to list: the loader reports a missing path or cache entry itself
    else:
        repo_id = str(path_or_repo_id)
        try:
            names = HfApi(token=token, library_name=LIBRARY_NAME).list_repo_files(repo_id, revision=revision)
        except (RepositoryNotFoundError, RevisionNotFoundError) as error:
            raise _clear_hub_error(error, repo_id, revision) from error
        where = f"The {_describe(repo_id, revision)}"
    if not _weight_files(names):
        pickles = _pickle_files(names)
        if pickles:
            raise _refuse_pickle(where, pickles)
        raise FileNotFoundError(f"{where} has no model.safetensors.")


def _describe(repo_id: str, revision: str | None) -> str:
    return f"drafter repo '{repo_id}' at revision '{revision or 'main'}'"


def _clear_hub_error(error: Exception, repo_id: str, revision: str | None) -> Exception:
    """The same exception type, with a first line that names the repo and revision and says what to check."""
    where = _describe(repo_id, revision)
    if isinstance(error, LocalEntryNotFoundError):
        return LocalEntryNotFoundError(
            f"The {where} is not in the local cache and the Hub cannot be reached (offline mode or no network). "
            f"Pull it once while online, or pass a local directory.\n\n{error}"
        )
    if isinstance(error, RevisionNotFoundError):
        message = (
            f"Revision '{revision}' does not exist in drafter repo '{repo_id}'. Check the branch, tag or "
            "commit name (`huggingface_hub.list_repo_refs` lists them)."
        )
    elif isinstance(error, RepositoryNotFoundError):
        message = (
            f"Drafter repo '{repo_id}' was not found (revision '{revision or 'main'}'). Check the repo id; "
            "for a private repo, pass a token with read access (or log in with `hf auth login`)."
        )
    elif isinstance(error, HfHubHTTPError) and isinstance(error, EntryNotFoundError):
        message = f"A file is missing from the {where}."
    else:
        return error
    return type(error)(f"{message}\n\n{error}", response=error.response)


__all__ = ["DRAFTER_FILE_PATTERNS", "PICKLE_PATTERNS", "UnsafeCheckpointError", "check_safetensors_only"]
