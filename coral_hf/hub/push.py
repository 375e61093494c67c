"""Pushing a drafter to the Hub: config, generation config, safetensors weights and its model card in one commit.

A failed push leaves the repo as it was. This module takes the drafter as any `save_pretrained`-able model (or a
directory), so the drafter's own `push_to_hub` can call it without an import cycle.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from huggingface_hub import CommitInfo, CommitOperationAdd, CommitOperationDelete, HfApi, ModelCard
from huggingface_hub.errors import EntryNotFoundError, RevisionNotFoundError
from torch import nn

from ..configuration_coral import CoralConfig
from ..datastore import DATASTORE_FILE
from .card import CARD_NAME, render_model_card
from .safety import DRAFTER_FILE_PATTERNS, LIBRARY_NAME, _matches, check_safetensors_only

logger = logging.getLogger(__name__)

# Files a push replaces: stale shards, pickles or a datastore of an earlier push are deleted in the same commit.
_STALE_WEIGHT_PATTERNS = (
    "model*.safetensors",
    "model.safetensors.index.json",
    "pytorch_model*.bin",
    "pytorch_model.bin.index.json",
    DATASTORE_FILE,
)

_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")


def _stage_files(drafter: nn.Module | str | os.PathLike, staging: Path) -> Path:
    """The directory holding the drafter's files: `save_pretrained` output for a model, else the directory itself."""
    if isinstance(drafter, nn.Module):  # a CoralDrafter
        drafter.save_pretrained(staging)
        return staging
    directory = Path(drafter)
    check_safetensors_only(directory)
    model_type = json.loads((directory / "config.json").read_text()).get("model_type")
    if model_type != CoralConfig.model_type:
        raise ValueError(
            f"{directory} holds a {model_type!r} model, not a CORAL drafter ({CoralConfig.model_type!r})."
        )
    return directory


def push_drafter(
    drafter: nn.Module | str | os.PathLike,
    repo_id: str,
    *,
    revision: str | None = None,
    private: bool | None = False,
    token: str | bool | None = None,
    commit_message: str | None = None,
    commit_description: str | None = None,
    create_pr: bool = False,
    card: ModelCard | str | os.PathLike | None = None,
    license: str | None = None,  # noqa: A002 - the Hub metadata key
    tags: Iterable[str] = (),
) -> CommitInfo:
    """Push a drafter to the Hub in one commit: config, generation config, safetensors weights and a model card.

    Args:
        drafter: a `CoralDrafter`, or a directory written by its `save_pretrained` (safetensors only).
        repo_id: `"user/name"` or `"org/name"`; created if missing.
        revision: branch to push to (created from `main` if missing). Default: `main`.
        private: visibility of a newly created repo (an existing repo keeps its visibility).
        token: Hub token; default: the `HF_TOKEN` environment variable or the `hf auth login` token. Never logged.
        commit_message: default `"Upload CORAL drafter"`.
        commit_description: optional longer commit description.
        create_pr: open a pull request instead of committing to the branch.
        card: a custom card (a `ModelCard`, its text, or a path to a README.md); default: the rendered card.
        license: `license` metadata for the rendered card.
        tags: extra Hub tags for the rendered card.

    Returns:
        `huggingface_hub.CommitInfo` (a `str`: the commit URL; `.oid` is the commit id).

    The commit is atomic on the Hub: if an upload or the commit fails, the branch keeps its previous revision.
    Stale weight files of an earlier push (other shards, pickles, a datastore this drafter no longer has) are
    deleted in the same commit.
    """
    if revision is not None and _COMMIT_RE.match(revision):
        raise ValueError(f"Cannot push to commit {revision}: pass a branch name as `revision`.")
    api = HfApi(token=token, library_name=LIBRARY_NAME)
    repo_id = api.create_repo(repo_id, private=private, exist_ok=True).repo_id
    if revision is not None and revision != "main" and not create_pr:
        api.create_branch(repo_id, branch=revision, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="coral-push-") as tmp:
        directory = _stage_files(drafter, Path(tmp))
        if card is None:
            source = drafter if isinstance(drafter, nn.Module) else directory
            card_text = str(render_model_card(source, repo_id, license=license, tags=tags))
        elif isinstance(card, ModelCard):
            card_text = str(card)
        elif isinstance(card, (str, os.PathLike)) and Path(card).is_file():
            card_text = Path(card).read_text(encoding="utf-8")
        else:
            card_text = str(card)

        names = sorted(p.name for p in directory.iterdir() if p.is_file() and _matches(p.name, DRAFTER_FILE_PATTERNS))
        operations: list[Any] = [
            CommitOperationAdd(path_in_repo=name, path_or_fileobj=str(directory / name)) for name in names
        ]
        operations.append(CommitOperationAdd(path_in_repo=CARD_NAME, path_or_fileobj=card_text.encode("utf-8")))
        try:
            remote = api.list_repo_files(repo_id, revision=revision)
        except (RevisionNotFoundError, EntryNotFoundError):
            remote = []
        stale = [
            name for name in remote if "/" not in name and name not in names and _matches(name, _STALE_WEIGHT_PATTERNS)
        ]
        operations.extend(CommitOperationDelete(path_in_repo=name) for name in stale)

        logger.info(
            "Pushing CORAL drafter to %s (revision %s): %s",
            repo_id,
            revision or "main",
            ", ".join([*names, CARD_NAME]),
        )
        commit = api.create_commit(
            repo_id,
            operations=operations,
            commit_message=commit_message or "Upload CORAL drafter",
            commit_description=commit_description,
            revision=revision,
            create_pr=create_pr,
        )
    logger.info("Pushed %s as commit %s", repo_id, commit.oid)
    return commit


__all__ = ["push_drafter"]
