"""FollowEval-style suite: every check type, the packaged instances, hand-graded answers and summarize()."""

import json

import pytest

from coral_hf.eval.followeval import (
    CHECK_REGISTRY,
    DIMENSIONS,
    LANGUAGES,
    _parse_check,
    check_response,
    load_followeval,
    normalize_answer,
    pool_sampled_runs,
    register_check,
    summarize,
    wilson_interval,
)

# (check as written in JSONL, a response that passes, a response that fails). Every registered type appears.
CHECK_CASES = [
    ({"type": "regex", "pattern": r"\bparis\b", "flags": "i"}, "It is PARIS.", "It is Lyon."),
    ({"type": "regex", "pattern": "[？?]$"}, "你好吗？", "你好吗。"),
    ({"type": "regex", "pattern": "^b$", "flags": "m"}, "a\nb\nc", "a b c"),
    ({"type": "not_regex", "pattern": r"\d"}, "eight", "8 legs"),
    ({"type": "not_regex", "pattern": "热"}, "夏天出汗多。", "天气很热。"),
    ({"type": "contains_all", "values": ["red", "blue"]}, "Red and BLUE.", "Red only."),
    ({"type": "contains_all", "values": ["你好?"]}, "你好？", "你好。"),  # full-width ？ matches ?
    ({"type": "contains_all", "values": ["Tokyo"], "case_sensitive": True}, "Tokyo", "tokyo"),
    ({"type": "contains_any", "values": ["cat", "dog"]}, "a Dog", "a bird"),
    ({"type": "contains_any", "values": ["火药", "指南针", "造纸"], "min": 2}, "火药和指南针", "只有火药"),
    ({"type": "contains_none", "values": ["white", "snow"]}, "pale as milk", "WHITE as snow"),
    ({"type": "count_occurrences", "value": "的", "min": 2, "max": 2}, "我的书的封面", "我的书"),
    ({"type": "count_occurrences", "value": "a", "max": 1}, "cat", "banana"),
    ({"type": "starts_with", "value": "Yes"}, "yes, indeed", "No."),
    ({"type": "starts_with", "value": "Yes", "case_sensitive": True}, "Yes.", "yes."),
    ({"type": "starts_with", "value": "不对"}, "不对，企鹅不会飞。", "对。"),
    ({"type": "ends_with", "value": "!"}, "The sky is blue!", "The sky is blue."),
    ({"type": "ends_with", "value": "。"}, "好。", "好"),
    ({"type": "exact_answer", "answers": ["Paris"]}, "**Paris.**", "Paris, France"),
    ({"type": "exact_answer", "answers": ["PARIS"]}, "ＰＡＲＩＳ", "Lyon"),  # full-width letters
    ({"type": "exact_answer", "answers": ["北京"]}, "北京。", "北京市"),
    ({"type": "exact_answer", "answers": ["B-A-N-A-N-A"]}, "`b-a-n-a-n-a`", "BANANA"),
    ({"type": "final_number", "value": 36}, "12 x 3 = 36", "36 dollars for 12 pens"),
    ({"type": "final_number", "value": 1000}, "It costs 1,000", "It costs 100"),
    ({"type": "final_number", "value": 4.5, "tolerance": 0.01}, "还剩４.５元", "没有数字"),  # full-width digits
    ({"type": "word_count", "max": 3}, "one two three", "one two three four"),
    ({"type": "word_count", "min": 4, "max": 4}, "I love 北京", "I love Beijing"),  # each CJK ideograph is a word
    ({"type": "word_count", "min": 2, "max": 2}, "don't stop", "do not stop"),
    ({"type": "char_count", "min": 5, "max": 5, "cjk_only": True}, "春眠不觉晓，", "春眠不觉晓处"),
    ({"type": "char_count", "max": 3}, "a b c", "abcd"),
    ({"type": "sentence_count", "min": 2, "max": 2}, "One. Two!", "Only one."),
    ({"type": "sentence_count", "min": 2, "max": 2}, "今天晴。明天雨！", "今天晴，明天雨。"),
    ({"type": "sentence_count", "max": 1}, "It costs 3.5 dollars.", "It costs 3. It is cheap."),
    ({"type": "sentence_count", "min": 2}, "first line\nsecond line", "one line"),
    ({"type": "line_count", "min": 2, "max": 2}, "a\n\nb", "a"),
    ({"type": "numbered_list", "min": 3, "max": 3}, "1. a\n2. b\n3. c", "1. a\n3. b\n4. c"),
    ({"type": "numbered_list", "min": 3, "max": 3}, "1、苹果\n2、香蕉\n3、梨", "1、苹果\n2、香蕉"),
    ({"type": "numbered_list", "min": 2, "max": 2}, "（1）春\n（2）夏", "12.5 kg\n3.5 kg"),
    ({"type": "numbered_list"}, "Intro:\n1) one", "- one"),
    ({"type": "bullet_list", "min": 2, "max": 2}, "- a\n* b", "- a\nb"),
    ({"type": "lowercase"}, "hello world", "Hello"),
    ({"type": "lowercase"}, "zhong guo", "北京"),  # no cased letter at all does not pass
    ({"type": "uppercase"}, "HELLO 1", "HELLo"),
    ({"type": "uppercase"}, "ARTIFICIAL INTELLIGENCE", ""),
    ({"type": "json_object", "keys": ["a"], "values": {"a": 1}}, '{"a": 1, "b": 2}', '{"a": "1"}'),
    ({"type": "json_object", "values": {"capital": "Tokyo"}}, '```json\n{"capital": "tokyo"}\n```', "capital: Tokyo"),
    ({"type": "json_object", "keys": ["a"], "exact_keys": True}, '{"a": null}', '{"a": 1, "b": 2}'),
    ({"type": "json_object", "keys": ["a"]}, '{"a": []}', '["a"]'),
    ({"type": "json_array", "items": ["x", "y"]}, '["X", "y"]', '["y", "x"]'),
    ({"type": "json_array", "min": 2}, "[1, 2]", "[1]"),
    ({"type": "json_array"}, "[]", '{"a": 1}'),
    ({"type": "ordered", "values": ["a", "b", "c"]}, "a, then b, then c", "b, a, c"),
    ({"type": "ordered", "values": ["首先", "其次", "最后"]}, "首先…其次…最后…", "首先…最后…"),
    ({"type": "sorted_lines"}, "apple\nBanana\ncherry", "banana\napple"),
    ({"type": "sorted_lines", "key": "alpha"}, "1. apple\n2. kiwi", "1. kiwi\n2. apple"),
    ({"type": "sorted_lines", "key": "numeric", "order": "desc"}, "12.5 kg\n9 kg\n2 kg", "2\n10"),
    ({"type": "sorted_lines", "key": "numeric"}, "6\n12\n18", "6\ntwelve"),
    ({"type": "sorted_lines", "key": "length"}, "北京\n长城站\n中华人民共和国", "中华人民共和国\n北京"),
    ({"type": "each_line", "pattern": "[a-z]+"}, "abc\n\ndef", "abc\nDef"),
    ({"type": "each_line", "pattern": "[\u4e00-\u9fff]{5}[，。]?"}, "春风吹绿柳，\n夏日照荷塘。", "春风吹绿柳树，"),
    ({"type": "each_line", "pattern": ".*"}, "x", "   "),
    ({"type": "unique_lines"}, "- a\n- b", "A\n- a."),
    ({"type": "unique_lines", "case_sensitive": True}, "A\na", "a\na"),
    ({"type": "cjk_ratio", "min": 0.9}, "这是中文。", "这是 Chinese."),
    ({"type": "cjk_ratio", "max": 0.0}, "panda", "熊猫 panda"),
]


@pytest.mark.parametrize(("check", "good", "bad"), CHECK_CASES)
def test_check_passes_and_fails(check, good, bad):
    parsed = _parse_check(check)
    good_passed, good_detail = parsed(good)
    bad_passed, bad_detail = parsed(bad)
    assert good_passed, f"{check} should pass {good!r}: {good_detail}"
    assert not bad_passed, f"{check} should fail {bad!r}: {bad_detail}"
    assert isinstance(good_detail, str) and isinstance(bad_detail, str)


def test_every_check_type_has_cases():
    assert {case[0]["type"] for case in CHECK_CASES} == set(CHECK_REGISTRY)


def test_normalize_answer():
    assert normalize_answer("  **Paris.** ") == "paris"
    assert normalize_answer("“北京。”") == "北京"
    assert normalize_answer("New   York") == "new york"
    assert normalize_answer("Ｂｅｎ！") == "ben"


@pytest.mark.parametrize(
    ("check", "message"),
    [
        ({"type": "nope"}, "unknown check type 'nope'"),
        ({"pattern": "x"}, "string 'type'"),
        ({"type": "regex"}, "missing a required argument: 'pattern'"),
        ({"type": "lowercase", "foo": 1}, "unexpected keyword argument 'foo'"),
        ({"type": "regex", "pattern": "("}, "rejects its parameters"),
        ({"type": "regex", "pattern": "x", "flags": "q"}, "unknown regex flag"),
        ({"type": "word_count"}, "at least one of 'min' and 'max'"),
        ({"type": "word_count", "max": "5"}, "rejects its parameters"),
        ({"type": "exact_answer", "answers": []}, "must not be empty"),
        ({"type": "sorted_lines", "key": "pinyin"}, "key must be"),
    ],
)
def test_bad_checks_are_rejected(check, message):
    with pytest.raises(ValueError, match=message):
        _parse_check(check)


def _instance_line(**overrides):
    record = {
        "id": "t-1",
        "language": "en",
        "dimensions": ["logical_reasoning", "response_constraints"],
        "instruction": "Answer with yes.",
        "checks": [{"type": "exact_answer", "answers": ["yes"]}],
        "reference": "Yes",
    }
    record.update(overrides)
    return json.dumps({key: value for key, value in record.items() if value is not None}, ensure_ascii=False)


@pytest.mark.parametrize(
    ("bad_line", "message"),
    [
        ("{not json", "invalid JSON"),
        (_instance_line(id="t-0"), "duplicate id 't-0' \\(first on line 1\\)"),
        (_instance_line(checks=[{"type": "nope"}]), "unknown check type 'nope'; known types: bullet_list"),
        (_instance_line(language="fr"), "'language' must be one of"),
        (_instance_line(dimensions=["humour"]), "unknown dimensions \\['humour'\\]"),
        (_instance_line(dimensions=[]), "'dimensions' must be a non-empty list"),
        (_instance_line(instruction=None), "missing fields \\['instruction'\\]"),
        (_instance_line(chekcs=[]), "unknown fields \\['chekcs'\\]"),
        (_instance_line(checks=[]), "'checks' must be a non-empty list"),
        (_instance_line(reference="No"), "the reference answer fails its own checks"),
    ],
)
def test_load_reports_line_numbers(tmp_path, bad_line, message):
    path = tmp_path / "suite.jsonl"
    path.write_text(_instance_line(id="t-0") + "\n\n" + bad_line + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match=f"line 3: {message}"):
        load_followeval(str(path))


def test_load_user_file_without_reference(tmp_path):
    path = tmp_path / "suite.jsonl"
    path.write_text(_instance_line(reference=None) + "\n", encoding="utf-8")
    (instance,) = load_followeval(str(path))
    assert instance.reference is None and instance.dimensions == ("logical_reasoning", "response_constraints")


def test_registered_check_type_usable_from_jsonl(tmp_path):
    @register_check("palindrome")
    def check_palindrome(text: str, *, ignore_case: bool = True) -> tuple[bool, str]:
        word = text.casefold() if ignore_case else text
        return word == word[::-1], f"{text!r} reversed is {text[::-1]!r}"

    try:
        with pytest.raises(ValueError, match="already registered"):
            register_check("palindrome")(check_palindrome)
        path = tmp_path / "suite.jsonl"
        path.write_text(_instance_line(checks=[{"type": "palindrome"}], reference="Level") + "\n", encoding="utf-8")
        (instance,) = load_followeval(str(path))
        assert not check_response(instance, "levels").passed
    finally:
        del CHECK_REGISTRY["palindrome"]


@pytest.fixture(scope="module")
def suite():
    return load_followeval()


def test_packaged_suite_is_well_formed(suite):
    assert len({instance.id for instance in suite}) == len(suite)
    for language in LANGUAGES:
        instances = [instance for instance in suite if instance.language == language]
        assert len(instances) >= 60, language
        assert {dimension for instance in instances for dimension in instance.dimensions} == set(DIMENSIONS)
    for instance in suite:
        assert len(instance.dimensions) >= 2, instance.id
        assert instance.id.startswith(f"{instance.language}-"), instance.id
        assert instance.reference is not None, instance.id
        assert check_response(instance, instance.reference).passed, instance.id
        assert not check_response(instance, "").passed, instance.id


def test_packaged_suite_uses_every_check_type(suite):
    assert {check.type for instance in suite for check in instance.checks} == set(CHECK_REGISTRY)


# Hand-graded answers: (an answer that follows the instruction, one that does not).
GRADED_ANSWERS = {
    "en-001": ("cherry\nraspberry\ntomato", "strawberry\ncherry\napple"),
    "en-003": ("**PARIS**", "Paris"),
    "en-005": ("west.", "East"),
    "en-007": ("1. Spring\n2. Summer\n3. Fall\n4. Winter", "1. Winter\n2. Spring\n3. Summer\n4. Autumn"),
    "en-010": ('```json\n{"country": "Japan", "capital": "Tokyo"}\n```', '{"country": "Japan", "capital": "Kyoto"}'),
    "en-011": ("3,7,19,25,42", "3, 7, 19, 42, 25"),
    "en-012": ("An umbrella keeps you dry in bad weather.", "People carry umbrellas because of the rain."),
    "en-014": ("2", "3"),
    "en-016": ("Hello World From Python", "Hello world from python"),
    "en-023": ("tuesday, thursday", "Tuesday, Thursday"),
    "en-030": ("Neither, they both weigh exactly one kilogram.", "A kilogram of iron is heavier than feathers."),
    "en-031": ("- red\n- orange\n- violet", "1. Red\n2. Green\n3. Blue"),
    "en-033": ('["april", "june", "september", "november"]', '["April", "June", "November", "September"]'),
    "en-037": ("Yes. All bloops are razzies, which are all lazzies.", "No, we cannot know that."),
    "en-046": ("1) apple\n2) kiwi\n3) mango\n4) zebra", "1. apple\n2. mango\n3. kiwi\n4. zebra"),
    "en-049": ("(2,2)", "(2, 3)"),
    "en-061": ("waves crash on rocks\nthe wave is blue\nsea waves are loud", "The waves roll in.\nWaves.\nA wave."),
    "en-063": ('{"word": "happy", "synonyms": ["glad", "content"]}', '{"word": "happy", "synonyms": "glad, content"}'),
    "en-071": ("Each pen costs 3 dollars, so 12 pens cost 12 * 3 = 36.", "The total is 36 dollars for 12 pens."),
    "zh-001": ("平太下天。", "天下太平"),
    "zh-003": ("７", "8"),
    "zh-007": ("上海 - 北京 - 广州", "上海-广州-北京"),
    "zh-009": ("“我今天很高兴”", "我今天很开心"),
    "zh-013": ("北京\n长城站\n中华人民共和国", "中华人民共和国\n北京\n长城站"),
    "zh-016": ("四个。", "4个季节"),
    "zh-018": ("竹子。", "大熊猫最喜欢吃的植物是竹子"),
    "zh-022": ("老鹰、蝴蝶、蜻蜓", "老鹰，蝴蝶，蜻蜓"),
    "zh-024": ("夏天流汗多，要及时补充水分。", "天气很热，出汗多，要多喝水。"),
    "zh-025": ("答：7 天", "7天"),
    "zh-027": ("红、橙、黄、绿、蓝、靛、紫", "紫、靛、蓝、绿、黄、橙、红"),
    "zh-030": ("低温可以抑制微生物生长。", "低温可以抑制微生物生长"),
    "zh-034": ("会。", "不会，因为不是所有猫都会爬树。"),
    "zh-038": ("6\n12\n18", "6、12、18"),
    "zh-040": ("不对，比如鸵鸟是鸟却不会飞。", "对，所有的鸟都会飞。"),
    "zh-048": ("北方", "东北"),
    "zh-059": ("春眠不觉晓\n夏雨润新苗\n秋月照高楼\n冬梅映雪飘", "春眠不觉晓，处处闻啼鸟。\n夜来风雨声，花落知多少。"),
    "zh-060": ("- 补充身体水分\n- 帮助消化\n- 预防便秘", "1. 补充身体水分\n2. 帮助消化\n3. 预防便秘"),
    "zh-063": ('{"hours": 24}', '{"hours": "24"}'),
    "zh-067": ("是太平洋。", "Pacific Ocean（太平洋）"),
    "zh-070": ("一角、五角、一元", "一元、五角、一角"),
    "zh-072": ("12 - 3 × 2.5 = 4.5（元）", "还剩 4.5 元，因为 3 支笔花了 7.5 元。"),
    "zh-073": ("天高云淡，大雁南飞。田野里一片金黄。", "秋天到了，树叶黄了。"),
}


@pytest.mark.parametrize(("instance_id", "good", "bad"), [(key, *pair) for key, pair in GRADED_ANSWERS.items()])
def test_graded_answers(suite, instance_id, good, bad):
    instance = next(instance for instance in suite if instance.id == instance_id)
    good_result = check_response(instance, good)
    assert good_result.passed, good_result.details
    bad_result = check_response(instance, bad)
    assert not bad_result.passed, bad_result.details
    assert len(bad_result.details) == len(instance.checks)
    assert check_response(instance, f"\n  {good}  \n").passed  # surrounding whitespace is ignored


def test_graded_answers_cover_both_languages():
    assert sum(key.startswith("en-") for key in GRADED_ANSWERS) >= 10
    assert sum(key.startswith("zh-") for key in GRADED_ANSWERS) >= 10


def test_summarize_counts_flips(suite):
    by_id = {instance.id: instance for instance in suite}
    instances = [by_id["en-002"], by_id["en-004"], by_id["zh-001"]]  # dims: SM+RC, LR+RC, SM+RC
    plain = ["tenalp", "Ann", "平太下天"]  # pass, fail, pass
    drafter = ["tenalp", "Ben", "天下太平"]  # pass, pass, fail
    summary = summarize(instances, plain, drafter)
    assert set(summary) == {
        "pass_rate_plain",
        "pass_rate_drafter",
        "verdict_flips",
        "flipped_ids",
        "by_dimension",
        "by_language",
        "n",
    }
    assert summary["n"] == 3
    assert summary["verdict_flips"] == 2 and summary["flipped_ids"] == ["en-004", "zh-001"]
    assert summary["pass_rate_plain"] == pytest.approx(2 / 3) and summary["pass_rate_drafter"] == pytest.approx(2 / 3)
    assert summary["by_language"] == {
        "en": {"plain": 0.5, "drafter": 1.0, "n": 2},
        "zh": {"plain": 1.0, "drafter": 0.0, "n": 1},
    }
    assert summary["by_dimension"]["string_manipulation"] == {"plain": 1.0, "drafter": 0.5, "n": 2}
    assert summary["by_dimension"]["logical_reasoning"] == {"plain": 0.0, "drafter": 1.0, "n": 1}
    assert summary["by_dimension"]["response_constraints"]["n"] == 3
    assert "spatial_reasoning" not in summary["by_dimension"]
    json.dumps(summary)  # report-ready


def test_summarize_identical_outputs_have_no_flips(suite):
    responses = [instance.reference for instance in suite]
    summary = summarize(suite, responses, list(responses))
    assert summary["verdict_flips"] == 0 and summary["flipped_ids"] == []
    assert summary["pass_rate_plain"] == summary["pass_rate_drafter"] == 1.0
    assert set(summary["by_dimension"]) == set(DIMENSIONS) and set(summary["by_language"]) == set(LANGUAGES)


def test_summarize_rejects_misaligned_inputs(suite):
    with pytest.raises(ValueError, match="aligned one to one"):
        summarize(suite[:2], ["a", "b"], ["a"])


def test_wilson_interval_matches_the_closed_form_and_stays_in_bounds():
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)  # not empty at 0 passes
    assert wilson_interval(5, 10) == pytest.approx((0.2366, 0.7634), abs=1e-4)
    assert wilson_interval(10, 10) == pytest.approx((0.7225, 1.0), abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError, match="passes must be in"):
        wilson_interval(3, 2)


def test_pool_sampled_runs_counts_every_seed_as_trials(suite):
    english = [instance for instance in suite if instance.language == "en"][:2]
    chinese = [instance for instance in suite if instance.language == "zh"][:2]
    instances = english + chinese

    def answers(passing):  # the reference passes, an empty answer fails
        return [instance.reference if i in passing else "" for i, instance in enumerate(instances)]

    def run(plain, drafter, tree):
        summary = summarize(instances, answers(plain), answers(drafter))
        summary["other_modes"] = {"tree": summarize(instances, answers(plain), answers(tree))}
        return summary

    pooled = pool_sampled_runs([run({0, 2}, {0}, {0, 1, 2}), run({1}, {1, 2, 3}, set())])
    assert pooled["runs"] == 2
    assert pooled["plain"]["passes"] == 3 and pooled["plain"]["n"] == 8
    assert pooled["plain"]["ci"] == pytest.approx(list(wilson_interval(3, 8)))
    drafter, tree = pooled["modes"]["drafter"], pooled["modes"]["tree"]
    assert (drafter["passes"], tree["passes"]) == (4, 3)
    assert drafter["difference"] == pytest.approx(0.125) and tree["difference"] == 0
    low, high = drafter["difference_ci"]
    assert -1 < low < 0 < drafter["difference"] < high < 1  # 8 trials cannot tell 3 from 4 passes
    assert pooled["by_language"]["en"]["plain"]["passes"] == 2  # instance 0 in run 1, instance 1 in run 2
    assert pooled["by_language"]["zh"]["modes"]["drafter"]["passes"] == 2
    json.dumps(pooled)


def test_pool_sampled_runs_rejects_runs_that_do_not_match(suite):
    with pytest.raises(ValueError, match="no runs"):
        pool_sampled_runs([])
    one = summarize(suite[:2], ["", ""], ["", ""])
    one["other_modes"] = {"tree": summarize(suite[:2], ["", ""], ["", ""])}
    other = summarize(suite[:2], ["", ""], ["", ""])
    with pytest.raises(ValueError, match="same modes and languages"):
        pool_sampled_runs([one, other])
