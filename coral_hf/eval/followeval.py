"""FollowEval-style instruction following: bilingual (en/zh) instructions checked by rules, no LLM judge.

FollowEval (Jing et al., 2023) tests instructions that each combine several of five dimensions (string manipulation,
commonsense reasoning, logical reasoning, spatial reasoning, response constraints) and grades every answer with a
small program. Its data is not public, so `data/followeval.jsonl` holds our own set written in that style.

For speculative decoding the point is not the pass rate of a small model but that it does not move: greedy decoding
with a drafter must give the same text as plain greedy decoding, so the number of verdict flips between the two
(`summarize(...)["verdict_flips"]`) must be 0.

Every check type is a small function registered with `@register_check("name")`; a JSONL line names the type and
passes the function's keyword arguments, so new instances need no code. The format is documented in
`docs/followeval.md`.
"""

from __future__ import annotations

import inspect
import json
import math
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

DIMENSIONS = (
    "string_manipulation",
    "commonsense_reasoning",
    "logical_reasoning",
    "spatial_reasoning",
    "response_constraints",
)
LANGUAGES = ("en", "zh")

CheckFn = Callable[..., tuple[bool, str]]
CHECK_REGISTRY: dict[str, CheckFn] = {}

_INSTANCE_KEYS = {"id", "language", "dimensions", "instruction", "checks", "reference"}
_REQUIRED_INSTANCE_KEYS = _INSTANCE_KEYS - {"reference"}

# CJK unified ideographs (basic block, extension A, compatibility ideographs, extensions B-F).
_CJK_CLASS = "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ebef"
_CJK = re.compile(f"[{_CJK_CLASS}]")
# A word is one CJK ideograph, or a run of letters/digits (apostrophes and hyphens inside a word are allowed).
_LATIN_RUN = f"(?:(?![{_CJK_CLASS}])[^\\W_])+"
_WORD = re.compile(f"[{_CJK_CLASS}]|{_LATIN_RUN}(?:['’-]{_LATIN_RUN})*")
_LATIN_LETTER = re.compile(f"(?![{_CJK_CLASS}])[^\\W\\d_]")
# Sentence ends: CJK/ASCII ! and ?, the ideographic full stop anywhere, an ASCII full stop before whitespace or the
# end (so "3.5" is not split), and line breaks.
_SENTENCE_SPLIT = re.compile(r"[。！？!?]+|\.+(?=\s|$)|\n+")
_NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?")
# List markers: "1." / "2)" (not followed by a digit, so "12.5" is a number), "3、" / "4．", "（5）", and bullets.
_NUMBERED_ITEM = re.compile(r"^\s*(?:(\d+)(?:[.)](?!\d)|[．、])|[(（](\d+)[)）])\s*\S")
_BULLET_ITEM = re.compile(r"^\s*[-*•·]\s+\S")
_LIST_MARKER = re.compile(r"^\s*(?:\d+(?:[.)](?!\d)|[．、])|[(（]\d+[)）]|[-*•·](?=\s))\s*")
_CODE_FENCE = re.compile(r"^```[\w-]*[ \t]*\n(.*?)\n?```$", re.DOTALL)
_REGEX_FLAGS = {"i": re.IGNORECASE, "m": re.MULTILINE, "s": re.DOTALL, "x": re.VERBOSE}


@dataclass(frozen=True)
class Check:
    """One rule of an instance: a registered check type and the keyword arguments from the JSONL line."""

    type: str
    params: dict[str, Any]

    def __call__(self, response: str) -> tuple[bool, str]:
        return CHECK_REGISTRY[self.type](response, **self.params)


@dataclass(frozen=True)
class FollowEvalInstance:
    """One instruction with the rules its answer must satisfy.

    `reference` is an optional answer written by the author; when present, loading verifies that it passes, which
    catches checks that contradict their own instruction.
    """

    id: str
    language: str
    dimensions: tuple[str, ...]
    instruction: str
    checks: tuple[Check, ...]
    reference: str | None = None


@dataclass(frozen=True)
class CheckOutcome:
    """Verdict of one check on one response; `detail` says what was measured (e.g. "63 words, expected <= 50")."""

    type: str
    passed: bool
    detail: str


@dataclass(frozen=True)
class CheckResult:
    """Verdict of a whole instance: it passes when every check passes."""

    passed: bool
    details: tuple[CheckOutcome, ...]


def register_check(name: str) -> Callable[[CheckFn], CheckFn]:
    """Register `fn(text, **params) -> (passed, detail)` as the check type `name`.

    The function's keyword parameters are the JSON fields of the check; parameters without a default are required.
    Loading dry-runs every check once on an empty response to validate its parameters, so the function must accept
    "" (and should raise on invalid parameters rather than return a verdict).
    """

    def decorator(fn: CheckFn) -> CheckFn:
        if name in CHECK_REGISTRY:
            raise ValueError(f"check type {name!r} is already registered")
        CHECK_REGISTRY[name] = fn
        return fn

    return decorator


# ----------------------------------------------------------------------------------------------------------------
# Helpers shared by the checks
# ----------------------------------------------------------------------------------------------------------------


def _fold(text: str, case_sensitive: bool) -> str:
    """Width-fold (NFKC: full-width `？１Ａ` become `?1A`) and, unless case-sensitive, case-fold."""
    text = unicodedata.normalize("NFKC", text)
    return text if case_sensitive else text.casefold()


def _is_edge_noise(char: str) -> bool:
    return char.isspace() or char in "`~" or unicodedata.category(char).startswith("P")


def _strip_edges(text: str) -> str:
    """Strip whitespace, punctuation (ASCII and full-width), quotes and markdown markers from both ends."""
    start, end = 0, len(text)
    while start < end and _is_edge_noise(text[start]):
        start += 1
    while end > start and _is_edge_noise(text[end - 1]):
        end -= 1
    return text[start:end]


def normalize_answer(text: str) -> str:
    """Normalise a short answer for exact comparison.

    NFKC, case-folded, inner whitespace collapsed, and punctuation, quotes and markdown markers (`*`, `` ` ``, `~`)
    stripped from both ends: `**Paris.**`, `"paris"` and `Ｐａｒｉｓ` all become `paris`, `北京。` becomes `北京`.
    """
    return _strip_edges(" ".join(_fold(text, case_sensitive=False).split()))


def _within(n: float, minimum: float | None, maximum: float | None, unit: str) -> tuple[bool, str]:
    if minimum is None and maximum is None:
        raise ValueError("give at least one of 'min' and 'max'")
    passed = (minimum is None or n >= minimum) and (maximum is None or n <= maximum)
    if minimum == maximum:
        expected = f"exactly {minimum}"
    elif maximum is None:
        expected = f">= {minimum}"
    elif minimum is None:
        expected = f"<= {maximum}"
    else:
        expected = f"{minimum}..{maximum}"
    return passed, f"{n} {unit}, expected {expected}"


def _compile(pattern: str, flags: str) -> re.Pattern[str]:
    value = 0
    for letter in flags:
        if letter not in _REGEX_FLAGS:
            raise ValueError(f"unknown regex flag {letter!r} (known: {''.join(_REGEX_FLAGS)})")
        value |= _REGEX_FLAGS[letter]
    return re.compile(pattern, value)


def _lines(text: str) -> list[str]:
    """Non-empty lines, stripped."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def _items(text: str) -> list[str]:
    """List items: non-empty lines, NFKC, without list marker (`1.`, `2)`, `3、`, `(4)`, `-`, `*`) or edge noise."""
    items = [_LIST_MARKER.sub("", unicodedata.normalize("NFKC", line), count=1) for line in _lines(text)]
    return [_strip_edges(" ".join(item.split())) for item in items]


def _parse_json(text: str) -> tuple[Any, str]:
    """Parse `text` as JSON, allowing one surrounding markdown code fence; returns (value, error message)."""
    fenced = _CODE_FENCE.match(text)
    try:
        return json.loads(fenced.group(1) if fenced else text), ""
    except json.JSONDecodeError as error:
        return None, f"not valid JSON: {error}"


def _same_value(actual: Any, expected: Any) -> bool:
    if isinstance(expected, str):
        return isinstance(actual, str) and normalize_answer(actual) == normalize_answer(expected)
    return type(actual) is type(expected) and actual == expected


# ----------------------------------------------------------------------------------------------------------------
# Check types. Each receives the response (leading/trailing whitespace stripped) and its JSON parameters.
# ----------------------------------------------------------------------------------------------------------------


@register_check("regex")
def check_regex(text: str, *, pattern: str, flags: str = "") -> tuple[bool, str]:
    """The pattern matches somewhere in the raw response (`re.search`); flags: any of "imsx"."""
    match = _compile(pattern, flags).search(text)
    return match is not None, f"matched {match.group(0)!r}" if match else "no match"


@register_check("not_regex")
def check_not_regex(text: str, *, pattern: str, flags: str = "") -> tuple[bool, str]:
    """The pattern matches nowhere in the raw response."""
    match = _compile(pattern, flags).search(text)
    return match is None, f"forbidden match {match.group(0)!r}" if match else "no match"


@register_check("contains_all")
def check_contains_all(text: str, *, values: list[str], case_sensitive: bool = False) -> tuple[bool, str]:
    """Every value occurs as a substring (width-folded; case-insensitive unless `case_sensitive`)."""
    haystack = _fold(text, case_sensitive)
    missing = [value for value in values if _fold(value, case_sensitive) not in haystack]
    return not missing, f"missing {missing}" if missing else "all present"


@register_check("contains_any")
def check_contains_any(
    text: str, *, values: list[str], min: int = 1, case_sensitive: bool = False
) -> tuple[bool, str]:
    """At least `min` (default 1) of the values occur as substrings."""
    haystack = _fold(text, case_sensitive)
    found = [value for value in values if _fold(value, case_sensitive) in haystack]
    return len(found) >= min, f"found {found}, expected at least {min}"


@register_check("contains_none")
def check_contains_none(text: str, *, values: list[str], case_sensitive: bool = False) -> tuple[bool, str]:
    """None of the values occurs as a substring."""
    haystack = _fold(text, case_sensitive)
    found = [value for value in values if _fold(value, case_sensitive) in haystack]
    return not found, f"forbidden {found}" if found else "none present"


@register_check("count_occurrences")
def check_count_occurrences(
    text: str, *, value: str, min: int | None = None, max: int | None = None, case_sensitive: bool = False
) -> tuple[bool, str]:
    """The number of non-overlapping occurrences of `value` lies within [min, max]."""
    count = _fold(text, case_sensitive).count(_fold(value, case_sensitive))
    return _within(count, min, max, f"x {value!r}")


@register_check("starts_with")
def check_starts_with(text: str, *, value: str, case_sensitive: bool = False) -> tuple[bool, str]:
    """The response starts with `value`."""
    passed = _fold(text, case_sensitive).startswith(_fold(value, case_sensitive))
    return passed, f"starts with {text[: len(value) + 10]!r}"


@register_check("ends_with")
def check_ends_with(text: str, *, value: str, case_sensitive: bool = False) -> tuple[bool, str]:
    """The response ends with `value`."""
    passed = _fold(text, case_sensitive).endswith(_fold(value, case_sensitive))
    return passed, f"ends with {text[-len(value) - 10 :]!r}"


@register_check("exact_answer")
def check_exact_answer(text: str, *, answers: list[str]) -> tuple[bool, str]:
    """The whole response equals one of the accepted answers after `normalize_answer`."""
    if not answers:
        raise ValueError("'answers' must not be empty")
    normalized = normalize_answer(text)
    return normalized in {normalize_answer(answer) for answer in answers}, f"normalised answer {normalized[:80]!r}"


@register_check("final_number")
def check_final_number(text: str, *, value: float, tolerance: float = 0.0) -> tuple[bool, str]:
    """The last number in the response (full-width digits and thousands separators allowed) equals `value`."""
    numbers = _NUMBER.findall(unicodedata.normalize("NFKC", text))
    if not numbers:
        return False, "no number"
    last = float(numbers[-1].replace(",", ""))
    return abs(last - value) <= tolerance, f"last number {numbers[-1]}"


@register_check("word_count")
def check_word_count(text: str, *, min: int | None = None, max: int | None = None) -> tuple[bool, str]:
    """Words: runs of letters/digits, and every CJK ideograph counts as one word (so it also works for Chinese)."""
    return _within(len(_WORD.findall(text)), min, max, "words")


@register_check("char_count")
def check_char_count(
    text: str, *, min: int | None = None, max: int | None = None, cjk_only: bool = False
) -> tuple[bool, str]:
    """Characters other than whitespace, or only CJK ideographs (the usual Chinese 字数) with `cjk_only`."""
    count = len(_CJK.findall(text)) if cjk_only else sum(not c.isspace() for c in text)
    return _within(count, min, max, "CJK characters" if cjk_only else "characters")


@register_check("sentence_count")
def check_sentence_count(text: str, *, min: int | None = None, max: int | None = None) -> tuple[bool, str]:
    """Sentences end at 。！？!?, at "." before whitespace or the end, and at line breaks (a heuristic)."""
    sentences = [piece for piece in _SENTENCE_SPLIT.split(text) if re.search(r"\w", piece)]
    return _within(len(sentences), min, max, "sentences")


@register_check("line_count")
def check_line_count(text: str, *, min: int | None = None, max: int | None = None) -> tuple[bool, str]:
    """The number of non-empty lines lies within [min, max]."""
    return _within(len(_lines(text)), min, max, "lines")


@register_check("numbered_list")
def check_numbered_list(text: str, *, min: int | None = 1, max: int | None = None) -> tuple[bool, str]:
    """Lines numbered `1.`, `2)`, `3、` or `（4）`, numbered 1, 2, 3, ... in order, and their count within bounds."""
    numbers = [int(m.group(1) or m.group(2)) for m in map(_NUMBERED_ITEM.match, text.splitlines()) if m]
    if numbers != list(range(1, len(numbers) + 1)):
        return False, f"item numbers {numbers} are not 1, 2, 3, ..."
    return _within(len(numbers), min, max, "numbered items")


@register_check("bullet_list")
def check_bullet_list(text: str, *, min: int | None = 1, max: int | None = None) -> tuple[bool, str]:
    """The number of bullet lines (starting with `-`, `*`, `•` or `·` and a space) lies within [min, max]."""
    return _within(sum(bool(_BULLET_ITEM.match(line)) for line in text.splitlines()), min, max, "bullet items")


@register_check("lowercase")
def check_lowercase(text: str) -> tuple[bool, str]:
    """No uppercase letter, and at least one lowercase one (an empty answer does not pass)."""
    upper = [c for c in text if c.isupper()]
    if upper:
        return False, f"uppercase letters {''.join(upper[:10])!r}"
    return (True, "all lowercase") if any(c.islower() for c in text) else (False, "no lowercase letter")


@register_check("uppercase")
def check_uppercase(text: str) -> tuple[bool, str]:
    """No lowercase letter, and at least one uppercase one."""
    lower = [c for c in text if c.islower()]
    if lower:
        return False, f"lowercase letters {''.join(lower[:10])!r}"
    return (True, "all uppercase") if any(c.isupper() for c in text) else (False, "no uppercase letter")


@register_check("json_object")
def check_json_object(
    text: str, *, keys: list[str] | None = None, values: dict[str, Any] | None = None, exact_keys: bool = False
) -> tuple[bool, str]:
    """The response (optionally inside one code fence) is a JSON object with these keys and values.

    String values compare after `normalize_answer`, other values exactly (so 24 does not match "24").
    """
    data, error = _parse_json(text)
    if error:
        return False, error
    if not isinstance(data, dict):
        return False, f"JSON {type(data).__name__}, expected an object"
    required = set(keys or []) | set(values or {})
    missing = sorted(required - set(data))
    if missing:
        return False, f"missing keys {missing}"
    if exact_keys and set(data) != required:
        return False, f"extra keys {sorted(set(data) - required)}"
    wrong = [key for key, expected in (values or {}).items() if not _same_value(data[key], expected)]
    return not wrong, f"wrong values for {wrong}" if wrong else "keys and values match"


@register_check("json_array")
def check_json_array(
    text: str, *, min: int | None = None, max: int | None = None, items: list[Any] | None = None
) -> tuple[bool, str]:
    """The response is a JSON array; optionally with a length in [min, max] or exactly `items`, in order."""
    data, error = _parse_json(text)
    if error:
        return False, error
    if not isinstance(data, list):
        return False, f"JSON {type(data).__name__}, expected an array"
    if items is not None:
        passed = len(data) == len(items) and all(map(_same_value, data, items))
        return passed, f"array {data!r}"[:200]
    if min is None and max is None:
        return True, f"array of {len(data)} items"
    return _within(len(data), min, max, "array items")


@register_check("ordered")
def check_ordered(text: str, *, values: list[str], case_sensitive: bool = False) -> tuple[bool, str]:
    """All values occur, and their first occurrences come in the given order."""
    haystack = _fold(text, case_sensitive)
    positions = [haystack.find(_fold(value, case_sensitive)) for value in values]
    missing = [value for value, position in zip(values, positions, strict=True) if position < 0]
    if missing:
        return False, f"missing {missing}"
    return positions == sorted(positions), f"first positions {positions}"


@register_check("sorted_lines")
def check_sorted_lines(text: str, *, order: str = "asc", key: str = "alpha") -> tuple[bool, str]:
    """List items (lines without list markers) are sorted by `key`.

    key "alpha": case-folded code-point order (meaningful for Latin script, not for Chinese pinyin or strokes);
    "numeric": the first number in each line; "length": number of characters. order: "asc" or "desc".
    """
    if order not in ("asc", "desc"):
        raise ValueError(f"order must be 'asc' or 'desc', got {order!r}")
    items = _items(text)
    if key == "alpha":
        keys: list[Any] = [item.casefold() for item in items]
    elif key == "length":
        keys = [len(item) for item in items]
    elif key == "numeric":
        numbers = [_NUMBER.search(item) for item in items]
        if not all(numbers):
            return False, "a line has no number"
        keys = [float(number.group(0).replace(",", "")) for number in numbers]
    else:
        raise ValueError(f"key must be 'alpha', 'numeric' or 'length', got {key!r}")
    return keys == sorted(keys, reverse=order == "desc"), f"items {items}"[:200]


@register_check("each_line")
def check_each_line(text: str, *, pattern: str, flags: str = "") -> tuple[bool, str]:
    """There is at least one non-empty line, and every one, stripped, matches the pattern in full."""
    compiled = _compile(pattern, flags)
    lines = _lines(text)
    bad = [line for line in lines if not compiled.fullmatch(line)]
    if not lines:
        return False, "no lines"
    return not bad, f"non-matching lines {bad[:3]}" if bad else f"{len(lines)} lines match"


@register_check("unique_lines")
def check_unique_lines(text: str, *, case_sensitive: bool = False) -> tuple[bool, str]:
    """No list item (line without list marker) is repeated."""
    items = [item if case_sensitive else item.casefold() for item in _items(text)]
    repeated = sorted({item for item in items if items.count(item) > 1})
    return not repeated, f"repeated {repeated}" if repeated else "all distinct"


@register_check("cjk_ratio")
def check_cjk_ratio(text: str, *, min: float | None = None, max: float | None = None) -> tuple[bool, str]:
    """Share of CJK ideographs among all letters (CJK + other scripts): 1.0 is all Chinese, 0.0 all English."""
    cjk, latin = len(_CJK.findall(text)), len(_LATIN_LETTER.findall(text))
    return _within(round(cjk / (cjk + latin), 3) if cjk + latin else 0.0, min, max, "CJK ratio")


# ----------------------------------------------------------------------------------------------------------------
# Loading, checking, summarising
# ----------------------------------------------------------------------------------------------------------------


def _parse_check(raw: Any) -> Check:
    """Build a Check from its JSON object; parameters are validated by a dry run on an empty response."""
    if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
        raise ValueError(f"a check must be an object with a string 'type', got {raw!r}")
    params = {key: value for key, value in raw.items() if key != "type"}
    fn = CHECK_REGISTRY.get(raw["type"])
    if fn is None:
        raise ValueError(f"unknown check type {raw['type']!r}; known types: {', '.join(sorted(CHECK_REGISTRY))}")
    try:
        inspect.signature(fn).bind("", **params)
    except TypeError as error:
        raise ValueError(f"check {raw['type']!r}: {error}") from None
    check = Check(type=raw["type"], params=params)
    try:
        check("")
    except Exception as error:  # a bad regex, a wrong parameter type, missing bounds, ...
        raise ValueError(f"check {raw['type']!r} rejects its parameters {params}: {error}") from None
    return check


def _parse_instance(record: Any) -> FollowEvalInstance:
    if not isinstance(record, dict):
        raise ValueError(f"expected a JSON object, got {type(record).__name__}")
    missing = sorted(_REQUIRED_INSTANCE_KEYS - set(record))
    unknown = sorted(set(record) - _INSTANCE_KEYS)
    if missing:
        raise ValueError(f"missing fields {missing}")
    if unknown:
        raise ValueError(f"unknown fields {unknown}; allowed: {sorted(_INSTANCE_KEYS)}")
    if not isinstance(record["id"], str) or not record["id"]:
        raise ValueError("'id' must be a non-empty string")
    if record["language"] not in LANGUAGES:
        raise ValueError(f"'language' must be one of {LANGUAGES}, got {record['language']!r}")
    dimensions = record["dimensions"]
    if (
        not isinstance(dimensions, list)
        or not dimensions
        or not all(isinstance(dimension, str) for dimension in dimensions)
        or len(set(dimensions)) != len(dimensions)
    ):
        raise ValueError("'dimensions' must be a non-empty list of strings without repeats")
    if unknown_dimensions := sorted(set(dimensions) - set(DIMENSIONS)):
        raise ValueError(f"unknown dimensions {unknown_dimensions}; known: {', '.join(DIMENSIONS)}")
    if not isinstance(record["instruction"], str) or not record["instruction"].strip():
        raise ValueError("'instruction' must be a non-empty string")
    if not isinstance(record["checks"], list) or not record["checks"]:
        raise ValueError("'checks' must be a non-empty list")
    reference = record.get("reference")
    if reference is not None and not isinstance(reference, str):
        raise ValueError("'reference' must be a string")
    instance = FollowEvalInstance(
        id=record["id"],
        language=record["language"],
        dimensions=tuple(dimensions),
        instruction=record["instruction"],
        checks=tuple(_parse_check(check) for check in record["checks"]),
        reference=reference,
    )
    if reference is not None and not (result := check_response(instance, reference)).passed:
        failed = [f"{outcome.type}: {outcome.detail}" for outcome in result.details if not outcome.passed]
        raise ValueError(f"the reference answer fails its own checks: {failed}")
    return instance


def load_followeval(path: str | None = None) -> list[FollowEvalInstance]:
    """Load and validate a FollowEval-style JSONL file (default: the packaged set).

    Every line is validated (fields, dimensions, known check types and their parameters, the reference answer);
    errors name the file and line number. Blank lines are skipped.
    """
    source = Path(path) if path is not None else resources.files("coral_hf.eval") / "data" / "followeval.jsonl"
    instances: list[FollowEvalInstance] = []
    seen: dict[str, int] = {}
    for line_number, line in enumerate(source.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            instance = _parse_instance(json.loads(line))
        except json.JSONDecodeError as error:
            raise ValueError(f"{source}, line {line_number}: invalid JSON: {error}") from None
        except ValueError as error:
            raise ValueError(f"{source}, line {line_number}: {error}") from None
        if instance.id in seen:
            first = seen[instance.id]
            raise ValueError(f"{source}, line {line_number}: duplicate id {instance.id!r} (first on line {first})")
        seen[instance.id] = line_number
        instances.append(instance)
    return instances


def check_response(instance: FollowEvalInstance, response: str) -> CheckResult:
    """Run every check of `instance` on `response` (leading/trailing whitespace ignored); deterministic."""
    text = response.strip()
    details = []
    for check in instance.checks:
        passed, detail = check(text)
        details.append(CheckOutcome(type=check.type, passed=bool(passed), detail=detail))
    return CheckResult(passed=all(outcome.passed for outcome in details), details=tuple(details))


def _rates(rows: Sequence[tuple[FollowEvalInstance, bool, bool]]) -> dict[str, float | int]:
    n = len(rows)
    return {
        "plain": sum(plain for _, plain, _ in rows) / n if n else 0.0,
        "drafter": sum(drafter for _, _, drafter in rows) / n if n else 0.0,
        "n": n,
    }


def summarize(
    instances: Sequence[FollowEvalInstance], responses_plain: Sequence[str], responses_drafter: Sequence[str]
) -> dict[str, Any]:
    """Pass rates of plain and speculative decoding on the same instances, and the verdicts that differ.

    Returns `{"pass_rate_plain", "pass_rate_drafter", "verdict_flips", "flipped_ids", "by_dimension": {dim: {"plain",
    "drafter", "n"}}, "by_language": {lang: {...}}, "n"}`; rates are fractions in [0, 1]. Lossless speculative
    decoding gives `verdict_flips == 0`. Dimensions and languages appear when at least one instance has them.
    """
    if not len(instances) == len(responses_plain) == len(responses_drafter):
        raise ValueError(
            f"got {len(instances)} instances, {len(responses_plain)} plain and {len(responses_drafter)} drafter "
            "responses; they must be aligned one to one"
        )
    rows = [
        (instance, check_response(instance, plain).passed, check_response(instance, drafter).passed)
        for instance, plain, drafter in zip(instances, responses_plain, responses_drafter, strict=True)
    ]
    overall = _rates(rows)
    flipped_ids = [instance.id for instance, plain, drafter in rows if plain != drafter]
    return {
        "pass_rate_plain": overall["plain"],
        "pass_rate_drafter": overall["drafter"],
        "verdict_flips": len(flipped_ids),
        "flipped_ids": flipped_ids,
        "by_dimension": {
            dimension: _rates([row for row in rows if dimension in row[0].dimensions])
            for dimension in DIMENSIONS
            if any(dimension in instance.dimensions for instance in instances)
        },
        "by_language": {
            language: _rates([row for row in rows if row[0].language == language])
            for language in sorted({instance.language for instance in instances})
        },
        "n": len(instances),
    }


def wilson_interval(passes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a pass rate (`z` = 1.96: 95%); unlike the normal approximation it stays inside
    [0, 1] and is not empty at 0 or n passes, which is where a small model's pass rates sit."""
    if not 0 <= passes <= n:
        raise ValueError(f"passes must be in [0, n], got {passes} of {n}")
    if n == 0:
        return 0.0, 1.0
    rate = passes / n
    center = (rate + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n))
    return max(0.0, center - half), min(1.0, center + half)


def _pooled(passes: int, n: int, z: float) -> dict[str, Any]:
    low, high = wilson_interval(passes, n, z)
    return {"passes": passes, "n": n, "rate": passes / n if n else 0.0, "ci": [low, high]}


def _difference(mode: dict[str, Any], plain: dict[str, Any]) -> dict[str, Any]:
    # Newcombe's hybrid score interval for a difference of two independent proportions, from the Wilson bounds.
    (mode_low, mode_high), (plain_low, plain_high) = mode["ci"], plain["ci"]
    difference = mode["rate"] - plain["rate"]
    return {
        "difference": difference,
        "difference_ci": [
            difference - math.hypot(mode["rate"] - mode_low, plain_high - plain["rate"]),
            difference + math.hypot(mode_high - mode["rate"], plain["rate"] - plain_low),
        ],
    }


def pool_sampled_runs(summaries: Sequence[dict[str, Any]], z: float = 1.96) -> dict[str, Any]:
    """Pass rates pooled over sampled runs (one per seed) of the same suite, with confidence intervals.

    With sampling, plain and speculative answers are different draws from the same distribution, so verdict flips
    mean nothing; what lossless sampling promises is equal pass rates. Every (instance, seed) answer is one trial.
    `summaries` are `summarize` results with the chain drafter at the top level and other modes under
    `other_modes` (what `coral-hf bench --prompts followeval` writes to its JSON as `followeval`). Returns
    `{"runs", "plain", "modes": {mode: {..., "difference", "difference_ci"}}, "by_language": {lang: {"plain",
    "modes"}}}`, each rate as `{"passes", "n", "rate", "ci"}` (Wilson); a difference is mode minus plain (Newcombe).
    """
    if not summaries:
        raise ValueError("no runs to pool")
    modes = ["drafter", *summaries[0].get("other_modes", {})]

    def per_mode(summary: dict[str, Any], mode: str) -> dict[str, Any]:
        return summary if mode == "drafter" else summary["other_modes"][mode]

    def pool(select: Callable[[dict[str, Any]], dict[str, Any]], plain_key: str, mode_key: str) -> dict[str, Any]:
        plain_passes = plain_n = 0
        counts = dict.fromkeys(modes, 0)
        for summary in summaries:
            first = select(summary)
            plain_n += first["n"]
            plain_passes += round(first[plain_key] * first["n"])
            for mode in modes:
                part = select(per_mode(summary, mode))
                counts[mode] += round(part[mode_key] * part["n"])
        plain = _pooled(plain_passes, plain_n, z)
        pooled_modes = {}
        for mode in modes:
            pooled_modes[mode] = _pooled(counts[mode], plain_n, z)
            pooled_modes[mode].update(_difference(pooled_modes[mode], plain))
        return {"plain": plain, "modes": pooled_modes}

    try:
        languages = sorted(summaries[0]["by_language"])
        overall = pool(lambda summary: summary, "pass_rate_plain", "pass_rate_drafter")
        by_language = {
            language: pool(lambda summary, language=language: summary["by_language"][language], "plain", "drafter")
            for language in languages
        }
    except KeyError as error:
        raise ValueError(f"runs do not share the same modes and languages (missing {error})") from None
    return {"runs": len(summaries), **overall, "by_language": by_language}
