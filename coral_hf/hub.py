"""Sharing drafters on the Hugging Face Hub: push with a model card, pull with safety and target checks.

- `push_drafter` uploads config, generation config, safetensors weights and a model card (README.md) rendered
  from `coral_hf/model_cards/coral_drafter.md.jinja`, in **one commit**: a failed push leaves the repo as it was.
- `pull_drafter` downloads only the files a drafter needs (never a pickle), checks the drafter belongs to the
  target, and attaches it. It works offline from the cache (`HF_HUB_OFFLINE=1`).
- `DrafterCardCallback` writes the same card while a `transformers.Trainer` saves and pushes checkpoints.

The card is a pure function of the drafter's config and weights (no dates, no paths, no credentials), so pushing
the same drafter twice gives the same card, and a pulled drafter's card matches the pushed one.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
import re
import shutil
import struct
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from huggingface_hub import (
    CommitInfo,
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    ModelCard,
    ModelCardData,
    is_offline_mode,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from torch import nn
from transformers import TrainerCallback

from .configuration_coral import CoralConfig
from .modeling_coral import CoralDrafter
from .target_utils import CoralTargetMismatchError

logger = logging.getLogger(__name__)

TEMPLATE_PATH = Path(__file__).parent / "model_cards" / "coral_drafter.md.jinja"
CARD_NAME = "README.md"
LIBRARY_NAME = "coral_hf"
CARD_TAGS = ("speculative-decoding", "coral", "eagle", "drafter")

# What a drafter repo needs; everything else in a repo (optimizer states, training args, ...) is left alone.
DRAFTER_FILE_PATTERNS = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "model-*-of-*.safetensors",
    "model.safetensors.index.json",
)
# Checkpoint formats that are loaded by unpickling, i.e. by running code from the file.
PICKLE_PATTERNS = ("*.bin", "*.pt", "*.pth", "*.ckpt", "*.pkl", "*.pickle", "*.joblib", "*.npy", "*.npz")
# Weight files a push replaces: stale shards or pickles of an earlier push are deleted in the same commit.
_STALE_WEIGHT_PATTERNS = (
    "model*.safetensors",
    "model.safetensors.index.json",
    "pytorch_model*.bin",
    "pytorch_model.bin.index.json",
)
_HUB_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")


class UnsafeCheckpointError(ValueError):
    """Raised instead of loading a pickle checkpoint (`pytorch_model.bin`, `*.pt`, ...): unpickling runs code."""


# ---------------------------------------------------------------------------------------------------- model card
def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for pattern in patterns)


def _format_count(count: int) -> str:
    for unit, scale in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if count >= scale:
            return f"{count / scale:.2f}{unit}"
    return str(count)


def _format_bytes(size: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if size >= scale:
            return f"{size / scale:.1f} {unit}"
    return f"{size} B"


def _format_value(value: Any) -> str:
    """A table cell: compact, single line, with pipes escaped."""
    if isinstance(value, float):
        text = f"{value:.4g}"
    elif isinstance(value, (list, tuple)):
        text = ", ".join(_format_value(item) for item in value)
    elif isinstance(value, Mapping):
        text = json.dumps(value, sort_keys=True, default=str)
    else:
        text = str(value)
    return text.replace("|", "\\|").replace("\n", " ")


def _flatten(mapping: Mapping[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    rows: list[tuple[str, Any]] = []
    for key, value in sorted(mapping.items()):  # config.json stores keys sorted: the card must not depend on order
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            rows.extend(_flatten(value, prefix=f"{name}."))
        elif value is not None:
            rows.append((name, value))
    return rows


def _safetensors_summary(directory: Path) -> tuple[int, int, str | None]:
    """(parameter count, tensor bytes, dtype) of the safetensors weights in `directory`, from the headers only."""
    count, size, dtypes = 0, 0, set()
    for path in sorted(directory.glob("*.safetensors")):
        with path.open("rb") as handle:
            (header_length,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(header_length))
        for name, info in header.items():
            if name == "__metadata__":
                continue
            numel = 1
            for dim in info["shape"]:
                numel *= dim
            count += numel
            size += info["data_offsets"][1] - info["data_offsets"][0]
            dtypes.add(info["dtype"])
    names = {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64"}
    dtype = names.get(next(iter(dtypes))) if len(dtypes) == 1 else None
    return count, size, dtype


def _eval_table(eval_results: Any) -> list[str]:
    """Markdown lines of the measured-results table; accepts one measurement, a list, or {prompt set: measurement}."""
    if not eval_results:
        return []
    if isinstance(eval_results, Mapping) and not any(key in eval_results for key in ("tau", "speedup")):
        rows = [
            {"prompts": name, **dict(result)}
            for name, result in sorted(eval_results.items())
            if isinstance(result, Mapping)
        ]
    elif isinstance(eval_results, Mapping):
        rows = [dict(eval_results)]
    else:
        rows = [dict(result) for result in eval_results if isinstance(result, Mapping)]
    if not rows:
        return []
    columns = [
        ("prompts", "Prompts"),
        ("draft_length", "Draft length"),
        ("tau", "tau"),
        ("speedup", "Speedup"),
        ("device", "Device"),
    ]
    known = {key for key, _ in columns}
    has_notes = any(set(row) - known for row in rows)
    header = [title for _, title in columns] + (["Notes"] if has_notes else [])
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = []
        for key, _ in columns:
            value = row.get(key)
            if key == "speedup" and isinstance(value, (int, float)):
                cells.append(f"{value:.2f}x")
            elif key == "tau" and isinstance(value, (int, float)):
                cells.append(f"{value:.2f}")
            else:
                cells.append("-" if value is None else _format_value(value))
        if has_notes:
            cells.append(", ".join(f"{k}={_format_value(v)}" for k, v in sorted(row.items()) if k not in known) or "-")
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _training_data(recipe: Mapping[str, Any]) -> tuple[str | None, str | None, list[str]]:
    """The recipe key naming the training data, a line about it, and the Hub dataset ids in it (card `datasets`)."""
    for key in ("dataset", "datasets", "data", "train_data", "training_data"):
        value = recipe.get(key)
        if value and not isinstance(value, Mapping):
            values = list(value) if isinstance(value, (list, tuple)) else [value]
            text = ", ".join(_format_value(item) for item in values)
            hub_ids = [item for item in values if isinstance(item, str) and _HUB_ID_RE.match(item)]
            return key, text, hub_ids
    return None, None, []


def _is_hub_id(name: str | None) -> bool:
    return bool(name) and _HUB_ID_RE.match(name) is not None and not Path(name).exists()


def render_model_card(
    drafter: CoralDrafter | CoralConfig | str | os.PathLike,
    repo_id: str | None = None,
    *,
    license: str | None = None,  # noqa: A002 - the Hub metadata key
    tags: Iterable[str] = (),
) -> ModelCard:
    """Render the drafter's model card (README.md) from its config and weights.

    Args:
        drafter: a `CoralDrafter`, or a directory written by `save_pretrained` (config + safetensors), or a
            `CoralConfig` alone (the parameter count is then unknown).
        repo_id: the Hub repo the card is for (used in the usage snippet); defaults to a placeholder.
        license: optional `license` metadata (e.g. the target's license).
        tags: extra Hub tags, added to `speculative-decoding`, `coral`, `eagle`, `drafter`.

    Returns:
        A `huggingface_hub.ModelCard`; `str(card)` is the README text, `card.data` the YAML metadata.
    """
    import jinja2

    if isinstance(drafter, CoralDrafter):
        config = drafter.config
        state = drafter.state_dict()  # what save_pretrained writes, so a card from the saved directory is identical
        num_parameters = sum(tensor.numel() for tensor in state.values())
        weights_bytes = sum(tensor.numel() * tensor.element_size() for tensor in state.values())
        dtypes = {tensor.dtype for tensor in state.values()}
        dtype = str(next(iter(dtypes))).removeprefix("torch.") if len(dtypes) == 1 else None
    elif isinstance(drafter, CoralConfig):
        config, num_parameters, weights_bytes, dtype = drafter, None, None, None
    else:
        config = CoralConfig.from_pretrained(drafter)
        num_parameters, weights_bytes, dtype = _safetensors_summary(Path(drafter))

    target = config.target_name_or_path or "<unknown target>"
    recipe = dict(config.training_recipe or {})
    data_key, training_data, dataset_ids = _training_data(recipe)
    card_data = ModelCardData(
        base_model=target if _is_hub_id(target) else None,
        library_name=LIBRARY_NAME,
        pipeline_tag="text-generation",
        license=license,
        datasets=dataset_ids or None,
        tags=list(dict.fromkeys([*CARD_TAGS, *tags])),
    )
    fingerprint = (config.target_fingerprint or {}).get("sha256")
    context = {
        "card_data": card_data.to_yaml(),
        "model_name": repo_id.split("/")[-1] if repo_id else f"CORAL drafter for {target.split('/')[-1]}",
        "repo_id": repo_id or "<user>/<drafter-repo>",
        "target": target,
        "target_url": f"https://huggingface.co/{target}" if _is_hub_id(target) else target,
        "target_revision": config.target_revision,
        "target_model_type": config.target_model_type,
        "target_hidden_size": config.target_hidden_size,
        "target_vocab_size": config.target_vocab_size,
        "num_draft_layers": config.num_draft_layers,
        "draft_length": config.draft_length,
        "confidence_threshold": config.draft_confidence_threshold,
        "num_parameters": _format_count(num_parameters) if num_parameters is not None else "unknown",
        "weights_size": _format_bytes(weights_bytes) if weights_bytes is not None else "size unknown",
        "dtype": dtype,
        "fingerprint": fingerprint[:16] if fingerprint else None,
        "recipe_rows": [(key, _format_value(value)) for key, value in _flatten(recipe) if key != data_key],
        "training_data": training_data,
        "eval_table": _eval_table(config.eval_results),
    }
    environment = jinja2.Environment(
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
    )
    template = environment.from_string(TEMPLATE_PATH.read_text(encoding="utf-8"))
    text = re.sub(r"\n{3,}", "\n\n", template.render(**context))
    return ModelCard(text, ignore_metadata_errors=False)


def write_model_card(
    drafter: CoralDrafter | str | os.PathLike,
    output_dir: str | os.PathLike,
    repo_id: str | None = None,
    **card_kwargs: Any,
) -> Path:
    """Render the card of `drafter` into `output_dir/README.md` (written atomically); returns its path."""
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    card = render_model_card(drafter, repo_id, **card_kwargs)
    path = output_dir / CARD_NAME
    tmp = path.with_name(f".{CARD_NAME}.tmp")
    tmp.write_text(str(card), encoding="utf-8")
    os.replace(tmp, path)
    return path


# ---------------------------------------------------------------------------------------------------- safety
def _weight_files(names: Iterable[str]) -> list[str]:
    """Top-level safetensors files (checkpoint folders a Trainer pushes, e.g. `last-checkpoint/`, do not count)."""
    return [name for name in names if "/" not in name and name.endswith(".safetensors")]


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


# ---------------------------------------------------------------------------------------------------- push
def _stage_files(drafter: CoralDrafter | str | os.PathLike, staging: Path) -> Path:
    """The directory holding the drafter's files: `save_pretrained` output for a model, else the directory itself."""
    if isinstance(drafter, CoralDrafter):
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
    drafter: CoralDrafter | str | os.PathLike,
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
    Stale weight files of an earlier push (other shards, pickles) are deleted in the same commit.
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
            source = drafter if isinstance(drafter, CoralDrafter) else directory
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


# ---------------------------------------------------------------------------------------------------- pull
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


# ---------------------------------------------------------------------------------------------------- training
def _find_drafter(model: nn.Module | None) -> CoralDrafter | None:
    """The drafter inside whatever the Trainer trains (the drafter itself, or a wrapper holding it)."""
    if model is None:
        return None
    if isinstance(model, CoralDrafter):
        return model
    drafter = getattr(model, "drafter", None)
    if isinstance(drafter, CoralDrafter):
        return drafter
    return next((module for module in model.modules() if isinstance(module, CoralDrafter)), None)


class DrafterCardCallback(TrainerCallback):
    """Keep the drafter's model card (README.md) in the Trainer's output directory and checkpoints.

    With `TrainingArguments(push_to_hub=True, hub_strategy="every_save" | "checkpoint" | "all_checkpoints")`, the
    Trainer pushes `output_dir` on every save; this callback writes the card right before each push
    (`on_push_begin`), so each pushed revision carries the same card `push_drafter` would write. On save it also
    writes the card into the new `checkpoint-*` folder and `output_dir`.

    Note: `Trainer.push_to_hub()` (the final push) regenerates README.md with the Trainer's generic card through
    `Trainer.create_model_card`. Use `DrafterCardTrainerMixin` in the Trainer class, or finish with
    `push_drafter(trainer.model, repo_id)`, to keep the drafter card there too.

    Args:
        repo_id: repo id for the card's usage snippet; default: `args.hub_model_id`.
        card_kwargs: passed to `render_model_card` (e.g. `license="apache-2.0"`).
    """

    def __init__(self, repo_id: str | None = None, **card_kwargs: Any):
        self.repo_id = repo_id
        self.card_kwargs = card_kwargs

    def _write(self, args: Any, model: nn.Module | None, directories: Iterable[str]) -> None:
        drafter = _find_drafter(model)
        if drafter is None:
            logger.warning("DrafterCardCallback: the trained model holds no CoralDrafter; no card written.")
            return
        repo_id = self.repo_id or getattr(args, "hub_model_id", None)
        for directory in directories:
            if directory and os.path.isdir(directory):
                write_model_card(drafter, directory, repo_id, **self.card_kwargs)

    def on_train_begin(self, args, state, control, **kwargs):
        if state.is_world_process_zero and args.push_to_hub and args.hub_token:
            logger.warning(
                "TrainingArguments.hub_token is set: the Trainer pickles its TrainingArguments, token included, into "
                "training_args.bin and pushes that file to the repo, where anyone who can read the repo can read the "
                "token. Authenticate with `hf auth login` or the HF_TOKEN environment variable instead."
            )

    def on_save(self, args, state, control, model=None, **kwargs):
        if state.is_world_process_zero:
            checkpoint = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
            self._write(args, model, [checkpoint, args.output_dir])

    def on_push_begin(self, args, state, control, model=None, **kwargs):
        if state.is_world_process_zero:
            self._write(args, model, [args.output_dir])

    def on_train_end(self, args, state, control, model=None, **kwargs):
        if state.is_world_process_zero and args.should_save:
            self._write(args, model, [args.output_dir])


class DrafterCardTrainerMixin:
    """Mix into a `transformers.Trainer` subclass so `trainer.push_to_hub()` pushes the drafter card.

    `Trainer.push_to_hub` calls `create_model_card`, which by default overwrites README.md with a generic
    training summary; this override writes the drafter card instead (`class MyTrainer(DrafterCardTrainerMixin,
    Trainer)`).
    """

    def create_model_card(self, *args: Any, **kwargs: Any) -> None:
        if not self.is_world_process_zero():
            return
        drafter = _find_drafter(self.accelerator.unwrap_model(self.model))
        if drafter is None:
            super().create_model_card(*args, **kwargs)
            return
        write_model_card(drafter, self.args.output_dir, getattr(self, "hub_model_id", None) or self.args.hub_model_id)


__all__ = [
    "DRAFTER_FILE_PATTERNS",
    "DrafterCardCallback",
    "DrafterCardTrainerMixin",
    "UnsafeCheckpointError",
    "check_safetensors_only",
    "download_drafter",
    "pull_drafter",
    "push_drafter",
    "render_model_card",
    "write_model_card",
]
