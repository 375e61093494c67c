"""The drafter's model card (README.md), rendered from `coral_hf/model_cards/coral_drafter.md.jinja`.

The card is a pure function of the drafter's config and weights (no dates, no paths, no credentials), so pushing
the same drafter twice gives the same card, and a pulled drafter's card matches the pushed one.
"""

from __future__ import annotations

import json
import os
import re
import struct
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard, ModelCardData
from torch import nn

from ..configuration_coral import CoralConfig
from ..datastore import DATASTORE_FILE, NgramDatastore
from .safety import _HUB_ID_RE, LIBRARY_NAME, _weight_files

TEMPLATE_PATH = Path(__file__).parent.parent / "model_cards" / "coral_drafter.md.jinja"

CARD_NAME = "README.md"

CARD_TAGS = ("speculative-decoding", "coral", "eagle", "drafter")


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
    """(parameter count, tensor bytes, dtype) of the safetensors weights in `directory` (not its datastore), from the
    headers only."""
    count, size, dtypes = 0, 0, set()
    for name in sorted(_weight_files(path.name for path in directory.iterdir())):
        with (directory / name).open("rb") as handle:
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
        ("decode_speedup", "Decode speedup"),
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
            if key in ("speedup", "decode_speedup") and isinstance(value, (int, float)):
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


def _stages(recipe: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The recipe of every training stage, latest first: a drafter continued with `--init-from` keeps the recipe of
    the drafter it started from under `continued_from`, which may itself have been continued."""
    stages = []
    while isinstance(recipe, Mapping) and recipe:
        stages.append(recipe)
        recipe = recipe.get("continued_from")
    return stages


def _stage_table(stages: list[Mapping[str, Any]]) -> list[str]:
    """Markdown lines of one row per training stage, earliest first, when the drafter was continued.

    Flattening the `continued_from` chain into the settings table would bury the current stage's settings under a
    copy of every earlier one.
    """
    if len(stages) < 2:
        return []
    lines = [
        "| Stage | Data | Conversations | Steps | Tokens | Learning rate | Held-out acc@1 | Held-out tau_sim |",
        "|---:|---|---:|---:|---:|---:|---:|---:|",
    ]
    for number, stage in enumerate(reversed(stages), start=1):
        heldout = stage.get("heldout_eval") or {}
        cells = [
            number,
            _training_data(stage)[1],
            stage.get("conversations"),
            stage.get("steps"),
            _format_count(stage["tokens_seen"]) if isinstance(stage.get("tokens_seen"), int) else None,
            (stage.get("optimizer") or {}).get("learning_rate"),
            heldout.get("acc_step_1"),
            heldout.get("tau_sim"),
        ]
        lines.append("| " + " | ".join("-" if cell is None else _format_value(cell) for cell in cells) + " |")
    return lines


def _is_hub_id(name: str | None) -> bool:
    return bool(name) and _HUB_ID_RE.match(name) is not None and not Path(name).exists()


def render_model_card(
    drafter: nn.Module | CoralConfig | str | os.PathLike,
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

    if isinstance(drafter, nn.Module):  # a CoralDrafter
        config = drafter.config
        state = drafter.state_dict()  # what save_pretrained writes, so a card from the saved directory is identical
        num_parameters = sum(tensor.numel() for tensor in state.values())
        weights_bytes = sum(tensor.numel() * tensor.element_size() for tensor in state.values())
        dtypes = {tensor.dtype for tensor in state.values()}
        dtype = str(next(iter(dtypes))).removeprefix("torch.") if len(dtypes) == 1 else None
        datastore = drafter.datastore
    elif isinstance(drafter, CoralConfig):
        config, num_parameters, weights_bytes, dtype, datastore = drafter, None, None, None, None
    else:
        config = CoralConfig.from_pretrained(drafter)
        num_parameters, weights_bytes, dtype = _safetensors_summary(Path(drafter))
        path = Path(drafter) / DATASTORE_FILE
        datastore = NgramDatastore.load(path) if path.is_file() else None

    target = config.target_name_or_path or "<unknown target>"
    recipe = dict(config.training_recipe or {})
    data_key, training_data, dataset_ids = _training_data(recipe)
    stages = _stages(recipe)
    for earlier in stages[1:]:  # a continued drafter was also trained on its earlier stages' datasets
        dataset_ids += [name for name in _training_data(earlier)[2] if name not in dataset_ids]
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
        "datastore": (
            f"{_format_count(len(datastore))} tokens of the target's own answers"
            + (f" ({datastore.source})" if datastore.source else "")
            + f", `{DATASTORE_FILE}`: up to {config.datastore_tokens} tokens of their continuation proposed as one "
            "more branch of the tree, and like a copy in the hybrid chain"
            if datastore is not None
            else None
        ),
        "recipe_rows": [
            (key, _format_value(value))
            for key, value in _flatten({k: v for k, v in recipe.items() if k != "continued_from"})
            if key != data_key
        ],
        "stage_table": _stage_table(stages),
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
    drafter: nn.Module | CoralConfig | str | os.PathLike,
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


__all__ = ["CARD_NAME", "render_model_card", "write_model_card"]
