"""`coral-hf bench`: the benchmark engine, its reports and the command, on a tiny target with an in-code tokenizer."""

from __future__ import annotations

import argparse
import json
import math
import re
import statistics

import pytest
import torch

from coral_hf.commands import bench as bench_command
from coral_hf.eval import bench as bench_module
from coral_hf.eval.bench import (
    DRAFTER,
    HYBRID,
    PLAIN,
    PROMPT_LOOKUP,
    TREE,
    TREE_HYBRID,
    PromptResult,
    TurnRun,
    aggregate,
    first_divergence,
    followeval_summary,
    median_interval,
    run_bench,
)
from coral_hf.eval.prompts import load_prompts
from coral_hf.eval.report import SPEEDUP_PLOT, TAU_PLOT, format_table, write_report
from coral_hf.packed_linear import packed_linear_available
from coral_hf.targets import native_bf16

from .testing_utils import make_chat_tokenizer, make_tiny_target, train_tiny_drafter

QUESTIONS = [
    {"question_id": 1, "category": "writing", "turns": ["Write a short poem about the sea.", "Now make it rhyme."]},
    {"question_id": 2, "category": "writing", "turns": ["Describe a quiet morning."]},
    {"question_id": 3, "category": "coding", "turns": ["Write a function that adds two numbers."]},
]
TURNS = sum(len(question["turns"]) for question in QUESTIONS)
MAX_NEW_TOKENS = 12


@pytest.fixture(scope="module")
def tokenizer():
    """A byte-level BPE tokenizer trained in code on the questions, with a ChatML chat template."""
    return make_chat_tokenizer([turn for question in QUESTIONS for turn in question["turns"]], vocab_size=300)


@pytest.fixture(scope="module")
def pair(tokenizer):
    """A tiny target over the tokenizer's vocabulary and a drafter fitted to it (accepts several tokens a round)."""
    target = make_tiny_target("llama", seed=1, vocab_size=len(tokenizer))
    return target, train_tiny_drafter(target, steps=60)


@pytest.fixture
def question_file(tmp_path):
    path = tmp_path / "questions.jsonl"
    path.write_text("".join(json.dumps(question) + "\n" for question in QUESTIONS), encoding="utf-8")
    return path


def _check_counts(numbers: dict, turns: int) -> None:
    """tau >= 1 and the per-round histograms add up to the rounds and tokens they summarise."""
    for mode_numbers in (numbers, numbers[PROMPT_LOOKUP], numbers[HYBRID]):
        histogram = {int(size): count for size, count in mode_numbers["tau_histogram"].items()}
        assert sum(histogram.values()) == mode_numbers["rounds"]
        assert mode_numbers["tau"] >= 1.0
        assert mode_numbers["identical"] == mode_numbers["compared"] == turns
    tokens = sum(int(size) * count for size, count in numbers["tau_histogram"].items())
    assert tokens == numbers["tokens"][DRAFTER]


def test_run_bench_greedy(pair, tokenizer, question_file, tmp_path):
    target, drafter = pair
    prompts = load_prompts(str(question_file))
    result = run_bench(
        target,
        tokenizer,
        drafter,
        prompts,
        max_new_tokens=MAX_NEW_TOKENS,
        warmup=1,
        prompt_lookup_tokens=4,
        hybrid_tokens=4,
        draft_step_repetitions=5,
    )
    summary = json.loads(json.dumps(result.summary()))  # JSON round trip: what --json writes

    assert set(summary["tokens_per_s"]) == {PLAIN, DRAFTER, PROMPT_LOOKUP, HYBRID}
    assert summary["speedup_median"] > 0 and summary["prompt_lookup"]["speedup_median"] > 0
    assert summary["hybrid"]["speedup_median"] > 0
    assert drafter.generation_config.prompt_lookup_num_tokens is None  # the hybrid setting is restored after the run
    assert summary["draft_length"] == drafter.generation_config.num_assistant_tokens
    assert summary["tokens"] == {mode: TURNS * MAX_NEW_TOKENS for mode in (PLAIN, DRAFTER, PROMPT_LOOKUP, HYBRID)}
    _check_counts(summary, TURNS)
    assert summary["tau"] > 1.1  # the fitted drafter gets drafts accepted
    assert summary["divergences"] == []
    assert set(summary["categories"]) == {"writing", "coding"}
    _check_counts(summary["categories"]["writing"], turns=3)
    _check_counts(summary["categories"]["coding"], turns=1)
    assert summary["settings"]["lossless_check"] and summary["settings"]["temperature"] == 0.0
    assert summary["machine"]["torch_threads"] == torch.get_num_threads()
    # The report names the vector units that decide bf16's cost, consistently with `--dtype auto`'s choice.
    bf16_flags = {"amx_bf16", "avx512_bf16"} & set(summary["machine"].get("cpu_flags", []))
    assert bool(bf16_flags) == native_bf16("cpu")[0]
    assert summary["settings"]["drafter_head"] == "full"
    assert 0 < summary["lm_head_ms"] < summary["draft_step_ms"] and 0 < summary["layer_ms"] < summary["draft_step_ms"]
    assert [row["turns"] for row in summary["per_prompt"]] == [2, 1, 1]
    # Every call is split at its first streamed tokens: prefill (one token in plain decoding), then decoding.
    for prompt in result.prompts:
        for mode, runs in prompt.runs.items():
            for run in runs:
                assert 0 < run.first_seconds < run.seconds
                assert run.first_tokens == 1 if mode == PLAIN else 1 <= run.first_tokens <= run.new_tokens
    for mode in (DRAFTER, PROMPT_LOOKUP, HYBRID):
        numbers = summary if mode == DRAFTER else summary[mode]
        assert numbers["decode_speedup_median"] > 0
        low, high = numbers["speedup_interval"]  # three prompts: the run's median comes with its interval
        assert low <= numbers["speedup_median"] <= high
    assert summary["categories"]["coding"]["speedup_interval"] is None  # one prompt: no interval
    assert set(summary["first_token_s"]) == set(summary["decode_tokens_per_s"]) == set(summary["tokens_per_s"])

    # Multi-turn: every mode answered both turns, and the second turn saw the same (plain) history in every mode.
    multi_turn = result.prompts[0]
    assert {mode: len(runs) for mode, runs in multi_turn.runs.items()} == dict.fromkeys(
        (PLAIN, DRAFTER, PROMPT_LOOKUP, HYBRID), 2
    )
    assert multi_turn.responses[DRAFTER] == multi_turn.responses[PLAIN]

    table = format_table(result)
    assert format_table(result, summary) == table  # a caller's summary (the CLI computes one) reads the same
    assert "writing" in table and "coding" in table and "all" in table
    assert "median speedup over all 3 prompts, 95% bootstrap interval" in table
    assert "drafter decode speedup" in table
    assert "token-identical" in table
    report = write_report(result, tmp_path / "report")
    assert (tmp_path / "report" / SPEEDUP_PLOT).stat().st_size > 0
    assert (tmp_path / "report" / TAU_PLOT).stat().st_size > 0
    text = report.read_text(encoding="utf-8")
    assert SPEEDUP_PLOT in text and TAU_PLOT in text and "## Lossless check" in text


def test_median_interval_resamples_prompts():
    """The bootstrap interval of a median: seeded, around the median, as wide as the prompts' spread, and none
    for fewer than three prompts."""
    spread = [1.2, 1.5, 1.8, 2.0, 2.1, 2.4, 3.0]
    low, high = median_interval(spread)
    assert low <= statistics.median(spread) <= high and low < high
    assert median_interval(spread) == (low, high)  # seeded: the same report every time
    assert min(spread) <= low and high <= max(spread)
    assert median_interval([2.0] * 5) == (2.0, 2.0)
    narrow_low, narrow_high = median_interval([1.9, 2.0, 2.0, 2.1, 2.0, 1.95, 2.05])
    assert narrow_high - narrow_low < high - low
    assert median_interval([1.5, 2.5]) is None
    with pytest.raises(ValueError, match="confidence"):
        median_interval(spread, confidence=1.5)


def test_decode_speedup_leaves_out_the_first_forward():
    """The decode speedup compares tokens/s after each call's first forward; the end-to-end speedup includes it."""
    plain = [TurnRun(token_ids=[0] * 10, seconds=1.0, rounds=10, first_seconds=0.5, first_tokens=1)] * 2
    drafted = [TurnRun(token_ids=[0] * 10, seconds=0.7, rounds=4, first_seconds=0.5, first_tokens=2)] * 2
    prompt = PromptResult(id="p", category="c", runs={PLAIN: plain, DRAFTER: drafted}, responses={})
    assert prompt.speedup(DRAFTER) == pytest.approx(1.0 / 0.7)
    assert prompt.decode_tokens_per_s(PLAIN) == pytest.approx(18 / 1.0)
    assert prompt.decode_speedup(DRAFTER) == pytest.approx((16 / 0.4) / 18)
    assert prompt.first_token_seconds(DRAFTER) == pytest.approx(0.5)
    # A call that produced everything in its first forward has no decoding phase: NaN, left out of medians.
    single = [TurnRun(token_ids=[0], seconds=0.5, rounds=1, first_seconds=0.5, first_tokens=1)]
    only_prefill = PromptResult(id="q", category="c", runs={PLAIN: single, DRAFTER: single}, responses={})
    assert math.isnan(only_prefill.decode_speedup(DRAFTER))
    numbers = aggregate([prompt, only_prefill], (PLAIN, DRAFTER))
    assert numbers["decode_speedup_median"] == pytest.approx(prompt.decode_speedup(DRAFTER))
    assert aggregate([only_prefill], (PLAIN, DRAFTER))["decode_speedup_median"] is None  # JSON has no NaN
    assert only_prefill.to_dict()["decode_speedup"] == {DRAFTER: None}


def test_run_bench_tree_beside_chain(pair, tokenizer, question_file, tmp_path):
    """--decoding tree: the tree modes run in the same interleaved run, identical, with their own tau; the run's
    draft overrides are recorded and the drafter's own settings restored afterwards."""
    target, drafter = pair
    result = run_bench(
        target,
        tokenizer,
        drafter,
        load_prompts(str(question_file)),
        max_new_tokens=MAX_NEW_TOKENS,
        warmup=0,
        prompt_lookup_tokens=None,
        hybrid_tokens=4,
        decoding=("chain", "tree"),
        confidence_threshold=0.3,
        copy_only_tokens=7,
        tree_overrides={"tree_total_tokens": 6, "tree_confidence_threshold": 0.2},
        draft_step_repetitions=0,
    )
    summary = json.loads(json.dumps(result.summary()))
    assert set(summary["tokens_per_s"]) == {PLAIN, DRAFTER, HYBRID, TREE, TREE_HYBRID}
    for mode in (TREE, TREE_HYBRID):
        numbers = summary[mode]
        assert numbers["identical"] == numbers["compared"] == TURNS
        assert sum(int(size) * count for size, count in numbers["tau_histogram"].items()) == TURNS * MAX_NEW_TOKENS
    assert summary[TREE]["tau"] > 1.1
    assert summary["settings"]["tree_total_tokens"] == 6
    assert summary["settings"]["tree_confidence_threshold"] == 0.2
    assert summary["settings"]["confidence_threshold"] == 0.3
    assert summary["settings"]["hybrid_copy_only_tokens"] == 7
    config = drafter.generation_config  # restored
    assert config.copy_only_tokens == drafter.config.copy_only_tokens
    assert config.tree_total_tokens == drafter.config.tree_total_tokens
    assert config.tree_confidence_threshold == drafter.config.tree_confidence_threshold
    assert config.assistant_confidence_threshold == drafter.config.draft_confidence_threshold
    assert "tree" in format_table(result)
    write_report(result, tmp_path / "report")
    with pytest.raises(ValueError, match="decoding"):
        run_bench(target, tokenizer, drafter, load_prompts(str(question_file)), decoding=("beam",))


def test_datastore_runs_in_the_modes_with_copies_only(pair, tokenizer, question_file):
    """The drafter's datastore joins `hybrid` and `tree_hybrid` (unless `datastore=False`), never the drafter alone
    (`drafter`, `tree`); the run records it and leaves the drafter's settings as they were."""
    from coral_hf.datastore import NgramDatastore
    from coral_hf.eval.bench import encode_chat

    target, drafter = pair
    prompts = load_prompts(str(question_file))
    answers = [
        target.generate(ids, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)[0, ids.shape[1] :].tolist()
        for ids in (encode_chat(tokenizer, [{"role": "user", "content": item.turns[0]}]) for item in prompts)
    ]
    drafter.datastore = NgramDatastore.build(answers, source="answers")
    try:
        summaries = {
            datastore: run_bench(
                target,
                tokenizer,
                drafter,
                prompts,
                max_new_tokens=MAX_NEW_TOKENS,
                warmup=0,
                prompt_lookup_tokens=None,
                hybrid_tokens=4,
                decoding=("chain", "tree"),
                datastore=datastore,
                draft_step_repetitions=0,
            ).summary()
            for datastore in (True, False)
        }
    finally:
        drafter.datastore = None
    assert summaries[True]["tau"] == summaries[False]["tau"]  # the drafter's chain alone
    assert summaries[True][TREE]["tau"] == summaries[False][TREE]["tau"]
    for mode in (HYBRID, TREE_HYBRID):
        assert summaries[True][mode]["tau"] > summaries[False][mode]["tau"]
        assert summaries[True][mode]["identical"] == summaries[True][mode]["compared"] == TURNS
    assert summaries[True]["settings"]["datastore"]["source"] == "answers"
    assert summaries[False]["settings"]["datastore"] is None
    assert drafter.generation_config.datastore_tokens == drafter.config.datastore_tokens


def test_run_bench_sampling_skips_identity_check(pair, tokenizer, question_file):
    target, drafter = pair
    prompts = load_prompts(str(question_file), categories=["coding"])
    result = run_bench(
        target,
        tokenizer,
        drafter,
        prompts,
        max_new_tokens=8,
        temperature=0.8,
        warmup=0,
        prompt_lookup_tokens=None,
        draft_length=2,
        draft_step_repetitions=0,
    )
    summary = result.summary()
    assert result.modes == (PLAIN, DRAFTER)
    assert PROMPT_LOOKUP not in summary and PROMPT_LOOKUP not in summary["tokens_per_s"]
    assert summary["compared"] == 0 and not summary["settings"]["lossless_check"]
    assert "draft_step_ms" not in summary
    assert summary["draft_length"] == 2 and max(summary["tau_histogram"]) <= 3
    assert 1.0 <= summary["tau"] <= 3.0
    assert drafter.generation_config.num_assistant_tokens != 2  # the override is undone after the run
    assert "temperature 0.8" in format_table(result)


def test_repeats_keep_the_median_call_of_each_mode(pair, tokenizer, question_file, monkeypatch):
    """--repeats N times every mode N times per turn, interleaved, and keeps the call of median duration."""
    target, drafter = pair
    prompts = load_prompts(str(question_file), categories=["coding"])
    calls: dict[str, list] = {}
    original = bench_module._Runner.__call__

    def recording(self, mode, input_ids, seed):
        run = original(self, mode, input_ids, seed)
        calls.setdefault(mode, []).append(run)
        return run

    monkeypatch.setattr(bench_module._Runner, "__call__", recording)
    result = run_bench(
        target,
        tokenizer,
        drafter,
        prompts,
        max_new_tokens=8,
        warmup=0,
        repeats=3,
        prompt_lookup_tokens=None,
        draft_step_repetitions=0,
    )
    assert result.settings["repeats"] == 3
    for mode in (PLAIN, DRAFTER):
        assert len(calls[mode]) == 3  # one turn, three timed calls
        (kept,) = result.prompts[0].runs[mode]
        assert kept is sorted(calls[mode], key=lambda run: run.seconds)[1]
    assert result.prompts[0].identical[DRAFTER] == 1
    with pytest.raises(ValueError, match="repeats"):
        run_bench(target, tokenizer, drafter, prompts, repeats=0)


def test_divergence_reports_position_and_logit_gap(pair, tokenizer):
    target, _ = pair
    input_ids = torch.tensor([[5, 6, 7]])
    plain = target.generate(input_ids, max_new_tokens=4, do_sample=False)[0, 3:].tolist()
    other = [plain[0], (plain[1] + 1) % len(tokenizer), *plain[2:]]
    found = first_divergence(target, tokenizer, input_ids, plain, other, prompt_id="p", turn=0, mode=DRAFTER)
    assert (found.position, found.plain_token, found.other_token) == (1, plain[1], other[1])
    assert found.top2_logit_gap >= 0 and found.logit_gap > 0  # plain greedy picked the target's argmax
    assert first_divergence(target, tokenizer, input_ids, plain, plain, prompt_id="p", turn=0, mode=DRAFTER) is None


def _run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="coral-hf")
    bench_command.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["bench", *argv])
    return args.func(args)


def test_cli_end_to_end(pair, tokenizer, question_file, tmp_path, capsys):
    target, drafter = pair
    target.save_pretrained(tmp_path / "target")
    tokenizer.save_pretrained(tmp_path / "target")
    drafter.save_pretrained(tmp_path / "drafter")
    common = ["--target", str(tmp_path / "target"), "--prompts", str(question_file), "--max-new-tokens", "6"]
    common += ["--warmup", "0", "--no-progress"]

    argv = [*common, "--drafter", str(tmp_path / "drafter"), "--drafter-head", "full", "--prompt-lookup-tokens", "3"]
    assert _run_cli([*argv, "--json", str(tmp_path / "out.json"), "--report", str(tmp_path / "report")]) == 0
    out = capsys.readouterr().out
    assert "drafter tok/s" in out and "hybrid tok/s" in out and "token-identical" in out
    summary = json.loads((tmp_path / "out.json").read_text(encoding="utf-8"))
    assert summary["identical"] == summary["compared"] == summary["hybrid"]["identical"] == TURNS
    assert summary["settings"]["prompt_lookup_tokens"] == 3 and not summary["settings"]["drafter_is_random"]
    packed = "yes" if packed_linear_available()[0] else "no"  # the CPU default: oneDNN-packed weights where possible
    assert summary["settings"]["packed_weights"].startswith(f"{packed} (auto:")
    assert summary["settings"]["drafter_dtype"].startswith(("float32 (auto:", "bfloat16 (auto:"))
    assert (tmp_path / "report" / "report.md").is_file()

    argv = [*common, "--drafter", "random", "--no-prompt-lookup", "--limit", "1", "--categories", "coding"]
    argv += ["--pack-weights", "off", "--drafter-dtype", "target"]
    assert _run_cli([*argv, "--draft-length", "3", "--json", str(tmp_path / "random.json")]) == 0
    assert "UNTRAINED" in capsys.readouterr().out
    summary = json.loads((tmp_path / "random.json").read_text(encoding="utf-8"))
    assert summary["settings"]["drafter_is_random"] and summary["draft_length"] == 3
    assert summary["settings"]["packed_weights"] == "no (as requested)"
    assert summary["settings"]["drafter_dtype"] == "float32 (the target's)"
    assert summary["compared"] == 1 and list(summary["categories"]) == ["coding"]

    assert _run_cli([*common, "--drafter", "random", "--drafter-head", "router"]) == 2
    assert "grouped head" in capsys.readouterr().err


def test_cli_without_drafter_for_target_explains(tokenizer, question_file, tmp_path, capsys):
    target = make_tiny_target("llama", vocab_size=len(tokenizer))
    target.save_pretrained(tmp_path / "target")
    tokenizer.save_pretrained(tmp_path / "target")
    assert _run_cli(["--target", str(tmp_path / "target"), "--prompts", str(question_file)]) == 2
    assert "--drafter random" in capsys.readouterr().err


def test_followeval_summary_compares_plain_and_drafter_verdicts(pair, tokenizer, tmp_path):
    target, drafter = pair
    prompts = load_prompts("followeval", limit=1)
    result = run_bench(
        target, tokenizer, drafter, prompts, max_new_tokens=6, warmup=0, draft_step_repetitions=0, decoding=("tree",)
    )
    result.followeval = followeval_summary(result)
    summary = result.summary()
    assert summary["followeval"]["n"] == len(prompts)
    assert summary["followeval"]["verdict_flips"] == 0  # greedy + lossless: the same text, the same verdicts
    assert set(summary["followeval"]["other_modes"]) == {PROMPT_LOOKUP, TREE}
    assert all(other["verdict_flips"] == 0 for other in summary["followeval"]["other_modes"].values())
    assert "FollowEval" in format_table(result) and "flips 0" in format_table(result)
    assert "| en | 1 |" in write_report(result, tmp_path).read_text()


def test_sampled_followeval_reports_pass_rates_without_verdict_flips(pair, tokenizer, tmp_path):
    target, drafter = pair
    prompts = load_prompts("followeval", limit=1)
    result = run_bench(
        target, tokenizer, drafter, prompts, max_new_tokens=6, warmup=0, draft_step_repetitions=0, temperature=0.7
    )
    result.followeval = followeval_summary(result)
    table = format_table(result)
    assert "FollowEval: pass rate plain" in table and not re.search(r"flips \d", table)  # different draws
    assert "followeval_seeds.py" in table and "followeval_seeds.py" in write_report(result, tmp_path).read_text()


def test_low_precision_tie_is_judged_on_the_scores_each_call_chose_by(pair, tokenizer):
    import copy

    target = copy.deepcopy(pair[0]).to(torch.bfloat16)
    input_ids = torch.tensor([[5, 6, 7]])
    plain = target.generate(input_ids, max_new_tokens=3, do_sample=False)[0, 3:].tolist()
    a, b, c = plain[1], (plain[1] + 1) % len(tokenizer), (plain[1] + 2) % len(tokenizer)
    other = [plain[0], b, *plain[2:]]

    def scores(**row: float) -> torch.Tensor:
        """Three positions of scores; position 1 holds `row` ({a, b, c}: logit), everything else far below."""
        table = torch.full((3, len(tokenizer)), -10.0)
        table[0, plain[0]] = 1.0
        for token, value in zip((a, b, c), (row["a"], row["b"], row.get("c", -10.0)), strict=True):
            table[1, token] = value
        return table

    def check(plain_row: dict, other_row: dict):
        return first_divergence(
            target,
            tokenizer,
            input_ids,
            plain,
            other,
            prompt_id="p",
            turn=0,
            mode=DRAFTER,
            plain_scores=scores(**plain_row),
            other_scores=scores(**other_row),
        )

    # Each call ranks the pair one unit apart (0.125 at 20 in bf16), the opposite ways round: rounding.
    found = check({"a": 20.125, "b": 20.0}, {"a": 20.0, "b": 20.125})
    assert found.tie and (found.plain_call_gap, found.speculative_call_gap) == (0.125, 0.125)
    assert not check({"a": 21.0, "b": 20.0}, {"a": 20.0, "b": 20.125}).tie  # plain had it by eight units
    # The bound is on the plain target's gap: a speculative call that saw the other token eight units ahead
    # computed the same position in another shape; it is reported, not judged.
    assert check({"a": 20.125, "b": 20.0}, {"a": 20.0, "b": 21.0}).speculative_call_gap == 1.0
    assert not check({"a": 20.125, "b": 20.0}, {"a": 20.0, "b": 20.125, "c": 22.0}).tie  # not its argmax: a bug
    assert not check({"a": 20.0, "b": 20.125}, {"a": 20.0, "b": 20.125}).tie  # plain did not take its argmax
    fp32 = first_divergence(
        pair[0], tokenizer, input_ids, plain, other, prompt_id="p", turn=0, mode=DRAFTER,
        plain_scores=scores(a=20.0, b=20.0), other_scores=scores(a=20.0, b=20.0),
    )  # fmt: skip
    assert not fp32.tie  # float32 stays strict


def test_low_precision_tie_beyond_the_bound_asks_the_targets_own_shapes(pair, tokenizer, monkeypatch):
    import copy

    target = copy.deepcopy(pair[0]).to(torch.bfloat16)
    input_ids = torch.tensor([[5, 6, 7]])
    plain = target.generate(input_ids, max_new_tokens=3, do_sample=False)[0, 3:].tolist()
    a, b = plain[1], (plain[1] + 1) % len(tokenizer)
    other = [plain[0], b, *plain[2:]]
    plain_scores, other_scores = torch.full((3, len(tokenizer)), -10.0), torch.full((3, len(tokenizer)), -10.0)
    plain_scores[0, plain[0]] = other_scores[0, plain[0]] = 1.0
    plain_scores[1, a], plain_scores[1, b] = 21.0, 20.0  # the plain call: eight units apart, beyond the bound
    other_scores[1, a], other_scores[1, b] = 20.0, 20.125
    asked = []

    def judge(shape_gaps: dict[str, float]):
        def fake(target_, input_ids_, generated, plain_token, other_token, chunk_sizes=()):
            asked.append((list(generated), plain_token, other_token))
            return shape_gaps

        monkeypatch.setattr(bench_module, "pair_gaps_by_shape", fake)
        return first_divergence(
            target, tokenizer, input_ids, plain, other, prompt_id="p", turn=0, mode=DRAFTER,
            plain_scores=plain_scores, other_scores=other_scores,
        )  # fmt: skip

    found = judge({"full forward": 1.0, "chunks of 4": 0.125})  # one shape of the target ranks them one unit apart
    assert found.tie and found.shape_gaps == {"full forward": 1.0, "chunks of 4": 0.125}
    assert asked == [([plain[0]], a, b)]  # the prefix before the divergence, plain token first
    assert judge({"full forward": 1.0, "chunks of 4": -0.25}).tie  # or the other way round
    assert not judge({"full forward": 1.0, "chunks of 4": 0.75}).tie  # every shape agrees with the plain call


def test_low_precision_runs_keep_the_scores_that_chose_each_token(pair, tokenizer):
    import copy

    target = copy.deepcopy(pair[0]).to(torch.bfloat16)
    drafter = copy.deepcopy(pair[1]).to(torch.bfloat16).attach(target)
    runner = bench_module._Runner(
        target, drafter, max_new_tokens=8, temperature=0.0, prompt_lookup_tokens=3, hybrid_tokens=3, keep_scores=True
    )
    input_ids = torch.tensor([[5, 6, 7, 5, 6]])
    for mode in (PLAIN, DRAFTER, PROMPT_LOOKUP, TREE_HYBRID):
        run = runner(mode, input_ids, seed=0)
        assert run.scores.shape == (run.new_tokens, len(tokenizer))
        assert run.scores.argmax(dim=-1).tolist() == run.token_ids  # greedy: each token is its row's argmax
    result = run_bench(
        target, tokenizer, drafter, load_prompts("mtbench", limit=1)[:1], max_new_tokens=6, warmup=0,
        prompt_lookup_tokens=None, draft_step_repetitions=0,
    )  # fmt: skip
    assert all(run.scores is None for runs in result.prompts[0].runs.values() for run in runs)  # freed once checked


def test_dtype_auto_follows_native_bf16():
    from coral_hf.targets import native_bf16, resolve_dtype

    native, reason = native_bf16("cpu")
    dtype, why = resolve_dtype("auto", "cpu")
    assert dtype == (torch.bfloat16 if native else torch.float32) and reason in why
    assert resolve_dtype("float32") == (torch.float32, "as requested")
