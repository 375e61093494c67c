"""Assisted generation with a CoralDrafter: lossless greedy and sampling, supported and refused modes."""

from __future__ import annotations

import logging

import pytest
import torch
from transformers.generation.streamers import BaseStreamer

from coral_hf import CoralDrafter, tree_generate
from coral_hf.target_utils import _warn_slow_bf16_verification
from coral_hf.training.feature_cache import compute_fused_target_features

from .testing_utils import (
    FAMILIES,
    assert_counts_follow,
    exact_second_token_distribution,
    make_tiny_target,
    train_tiny_drafter,
)


def _prompt(seed: int, length: int, vocab: int) -> torch.LongTensor:
    return torch.randint(1, vocab, (1, length), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("draft_length", [1, 3, 6])
def test_greedy_identical_with_random_drafter(family, draft_length):
    target = make_tiny_target(family)
    drafter = CoralDrafter.from_target(target, draft_length=draft_length)
    for seed in range(6):
        prompt = _prompt(seed, length=1 + seed * 3, vocab=target.config.vocab_size)
        plain = target.generate(prompt, max_new_tokens=25, do_sample=False)
        assisted = target.generate(prompt, max_new_tokens=25, do_sample=False, assistant_model=drafter)
        assert torch.equal(plain, assisted), f"seed {seed}: {plain} != {assisted}"


def test_greedy_identical_with_trained_drafter_and_tau_above_one(trained_llama_pair):
    target, drafter = trained_llama_pair
    tokens, rounds = 0, 0
    for seed in range(8):
        prompt = _prompt(seed, length=4, vocab=target.config.vocab_size)
        plain = target.generate(prompt, max_new_tokens=40, do_sample=False)
        assisted = target.generate(prompt, max_new_tokens=40, do_sample=False, assistant_model=drafter)
        assert torch.equal(plain, assisted)
        tokens += assisted.shape[1] - prompt.shape[1]
        rounds += drafter.last_generation_stats["rounds"]
    # The fitted drafter gets several drafts accepted: the multi-token acceptance + cache rollback paths ran.
    assert tokens / rounds > 1.15


def test_confidence_threshold_stops_drafts_early_and_stays_lossless(trained_llama_pair):
    target, drafter = trained_llama_pair
    prompt = _prompt(3, length=4, vocab=target.config.vocab_size)
    plain = target.generate(prompt, max_new_tokens=30, do_sample=False)
    drafter.generation_config.assistant_confidence_threshold = 0.9
    try:
        assisted = target.generate(prompt, max_new_tokens=30, do_sample=False, assistant_model=drafter)
        drafted_with_threshold = drafter.last_generation_stats["drafted"]
    finally:
        drafter.generation_config.assistant_confidence_threshold = 0.0
    target.generate(prompt, max_new_tokens=30, do_sample=False, assistant_model=drafter)
    assert torch.equal(plain, assisted)
    assert drafted_with_threshold < drafter.last_generation_stats["drafted"]


def test_eos_and_max_new_tokens_match_plain():
    target = make_tiny_target("llama", seed=3, eos_token_id=7)
    drafter = train_tiny_drafter(target, steps=100)
    stopped_early = False
    for seed in range(10):
        prompt = _prompt(seed, length=3, vocab=target.config.vocab_size)
        plain = target.generate(prompt, max_new_tokens=30, do_sample=False)
        assisted = target.generate(prompt, max_new_tokens=30, do_sample=False, assistant_model=drafter)
        assert torch.equal(plain, assisted)
        stopped_early |= plain.shape[1] < prompt.shape[1] + 30
    assert stopped_early, "no prompt hit EOS: the EOS path was not exercised"


def test_streamer_receives_exactly_the_output(trained_llama_pair):
    target, drafter = trained_llama_pair

    class Collect(BaseStreamer):
        def __init__(self):
            self.tokens: list[int] = []

        def put(self, value):
            self.tokens.extend(value.flatten().tolist())

        def end(self):
            pass

    streamer = Collect()
    prompt = _prompt(1, length=5, vocab=target.config.vocab_size)
    output = target.generate(prompt, max_new_tokens=20, do_sample=False, assistant_model=drafter, streamer=streamer)
    assert streamer.tokens == output[0].tolist()  # the prompt first, then every new token once


def test_lora_wrapped_target_is_lossless():
    peft = pytest.importorskip("peft")
    target = make_tiny_target("llama", seed=4)
    lora = peft.get_peft_model(
        target, peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    )
    lora.eval()
    drafter = CoralDrafter.from_target(lora)
    for seed in range(4):
        prompt = _prompt(seed, length=5, vocab=96)
        plain = lora.generate(input_ids=prompt, max_new_tokens=20, do_sample=False)
        assisted = lora.generate(input_ids=prompt, max_new_tokens=20, do_sample=False, assistant_model=drafter)
        assert torch.equal(plain, assisted)


def test_plain_generate_after_assisted_is_untouched(trained_llama_pair):
    target, drafter = trained_llama_pair
    prompt = _prompt(2, length=4, vocab=target.config.vocab_size)
    before = target.generate(prompt, max_new_tokens=15, do_sample=False)
    target.generate(prompt, max_new_tokens=15, do_sample=False, assistant_model=drafter)
    assert torch.equal(before, target.generate(prompt, max_new_tokens=15, do_sample=False))
    assert drafter.feature_recorder.features is None  # the plain run did not record features


# ---------------------------------------------------------------- sampling is lossless


@pytest.mark.parametrize("temperature,top_k", [(1.0, None), (0.7, 8)])
def test_sampling_matches_target_distribution(temperature, top_k):
    """Chi-square test of the 2nd generated token against the exact target marginal (p < 1e-3 fails)."""
    target = make_tiny_target("llama", seed=5, vocab_size=24)
    with torch.no_grad():
        target.lm_head.weight.mul_(0.25)  # spread the distribution: many tokens carry mass
    drafter = train_tiny_drafter(target, steps=150)
    prompt = _prompt(0, length=4, vocab=24)
    exact = exact_second_token_distribution(target, prompt, temperature, top_k)
    samples = 2500
    counts = torch.zeros(24)
    torch.manual_seed(0)
    for _ in range(samples):
        out = target.generate(
            prompt,
            max_new_tokens=3,  # token 2 is drafted by the drafter (token 1 follows the first-round placeholder)
            do_sample=True,
            temperature=temperature,
            top_k=top_k or 0,
            top_p=1.0,
            assistant_model=drafter,
        )
        counts[out[0, prompt.shape[1] + 1]] += 1
    assert_counts_follow(counts, exact)


# ---------------------------------------------------------------- refused modes


def test_beam_search_is_refused_not_silently_ignored(trained_llama_pair):
    target, drafter = trained_llama_pair
    with pytest.raises(ValueError, match="num_beams=2"):
        target.generate(_prompt(0, 4, 96), max_new_tokens=5, num_beams=2, do_sample=False, assistant_model=drafter)


def test_batch_and_num_return_sequences_are_refused(trained_llama_pair):
    target, drafter = trained_llama_pair
    batch = torch.randint(1, 96, (2, 4))
    with pytest.raises(ValueError, match="batch_size = 1"):
        target.generate(batch, attention_mask=torch.ones_like(batch), max_new_tokens=5, assistant_model=drafter)
    with pytest.raises(ValueError, match="num_return_sequences"):
        target.generate(
            _prompt(0, 4, 96), max_new_tokens=5, do_sample=True, num_return_sequences=2, assistant_model=drafter
        )


def test_drafter_cannot_generate_on_its_own(trained_llama_pair):
    _, drafter = trained_llama_pair
    with pytest.raises(TypeError, match="assistant_model=drafter"):
        drafter.generate(_prompt(0, 4, 96), max_new_tokens=5)


def test_unattached_drafter_says_how_to_attach(trained_llama_pair):
    target, drafter = trained_llama_pair
    detached = CoralDrafter(drafter.config)
    with pytest.raises(RuntimeError, match="attach"):
        target.generate(_prompt(0, 4, 96), max_new_tokens=5, assistant_model=detached)


# ---------------------------------------------------------------- hybrid: drafter + prompt lookup


def test_lookup_continuation_votes_over_the_occurrences_of_the_longest_suffix():
    from coral_hf.generation import lookup_continuation

    sequence = torch.tensor([5, 6, 7, 1, 5, 6, 8, 9, 5, 6])
    assert lookup_continuation(sequence, max_ngram=2, num_tokens=3).tolist() == [8, 9, 5]  # a tie: the latest "5 6"
    assert lookup_continuation(torch.tensor([3, 4, 3]), max_ngram=2, num_tokens=4).tolist() == [4, 3]  # n=1
    assert lookup_continuation(torch.tensor([1, 2, 3]), max_ngram=2, num_tokens=4) is None
    # "1 2" was followed by 7 twice and by 9 once: the majority, not the latest; then the occurrences that agree vote.
    voted = torch.tensor([1, 2, 7, 1, 2, 7, 1, 2, 9, 1, 2])
    assert lookup_continuation(voted, max_ngram=2, num_tokens=3).tolist() == [7, 1, 2]
    # The longest repeated suffix decides which occurrences vote: "7 1 2" once, followed by 3; "1 2" by 4 twice.
    longest = torch.tensor([7, 1, 2, 3, 1, 2, 4, 1, 2, 4, 7, 1, 2])
    assert lookup_continuation(longest, max_ngram=3, num_tokens=2).tolist() == [3, 1]
    assert lookup_continuation(longest, max_ngram=2, num_tokens=2).tolist() == [4, 7]
    # A repeating line: the latest occurrence is cut off by the sequence's end, the earlier ones carry the copy on.
    repeating = torch.tensor([4, 5, 4, 5, 4, 5])
    assert lookup_continuation(repeating, max_ngram=2, num_tokens=8).tolist() == [4, 5, 4, 5]


def _repetitive_prompt(seed: int, vocab: int) -> torch.LongTensor:
    """A prompt that repeats a random phrase, so prompt lookup finds matches (copied rounds happen)."""
    phrase = _prompt(seed, length=5, vocab=vocab)
    return torch.cat([phrase, _prompt(seed + 100, length=2, vocab=vocab), phrase, phrase[:, :2]], dim=1)


def _assert_hybrid_identical(target, drafter, max_new_tokens: int, seeds: int = 6) -> dict[str, int]:
    """Generate on repetitive prompts with and without the drafter, assert greedy identity, sum the drafter's stats."""
    totals: dict[str, int] = {}
    for seed in range(seeds):
        prompt = _repetitive_prompt(seed, target.config.vocab_size)
        plain = target.generate(prompt, max_new_tokens=max_new_tokens, do_sample=False)
        assisted = target.generate(prompt, max_new_tokens=max_new_tokens, do_sample=False, assistant_model=drafter)
        assert torch.equal(plain, assisted), f"seed {seed}: {plain} != {assisted}"
        for name, value in drafter.last_generation_stats.items():
            totals[name] = totals.get(name, 0) + value
    return totals


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("copy_confidence", [0.0, 1.0])
def test_hybrid_greedy_identical(family, copy_confidence):
    """Copied and drafted rounds mix, and every output equals plain greedy (copy_confidence=1 copies when it can)."""
    target = make_tiny_target(family)
    drafter = CoralDrafter.from_target(target, draft_length=4, prompt_lookup_tokens=4, copy_confidence=copy_confidence)
    copied = _assert_hybrid_identical(target, drafter, max_new_tokens=30)["copied_rounds"]
    if copy_confidence == 1.0:
        assert copied > 0


@pytest.mark.parametrize("family", FAMILIES)
def test_hybrid_copies_run_past_the_draft_length_and_stay_lossless(family):
    """A copy costs no drafter work, so it runs to `prompt_lookup_tokens`, not to the draft length; outputs cut by
    `max_new_tokens` or by an EOS inside a copy still equal plain greedy."""
    target = make_tiny_target(family)
    drafter = CoralDrafter.from_target(target, draft_length=2, prompt_lookup_tokens=8, copy_confidence=1.0)
    drafted = rounds = 0
    for seed in range(6):
        prompt = _repetitive_prompt(seed, target.config.vocab_size)
        for max_new_tokens, eos in ((5, None), (23, None), (40, int(prompt[0, 3]))):
            kwargs = dict(max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=eos)
            plain = target.generate(prompt, **kwargs)
            assisted = target.generate(prompt, **kwargs, assistant_model=drafter)
            assert torch.equal(plain, assisted), f"seed {seed}, max_new_tokens {max_new_tokens}, eos {eos}"
            drafted += drafter.last_generation_stats["drafted"]
            rounds += drafter.last_generation_stats["rounds"]
    assert drafted > 2 * rounds  # rounds proposed more tokens than the draft length: copies longer than 2


def test_hybrid_sampling_matches_target_distribution():
    """Chi-square test of the 2nd generated token with copied (one-hot q) proposals; p < 1e-3 fails."""
    target = make_tiny_target("llama", seed=2, vocab_size=24)
    with torch.no_grad():
        target.lm_head.weight.mul_(0.25)
    drafter = CoralDrafter.from_target(target, draft_length=3, prompt_lookup_tokens=3, copy_confidence=1.0)
    prompt = torch.tensor([[3, 7, 9, 3, 7, 9, 3]])  # after a first token 3, 7 or 9 the lookup has a copy
    exact = exact_second_token_distribution(target, prompt)
    counts = torch.zeros(24)
    copied = 0
    torch.manual_seed(0)
    for _ in range(2500):
        # max_new_tokens=3: token 2 is proposed in the first drafted round (token 1 follows the placeholder round).
        out = target.generate(prompt, max_new_tokens=3, do_sample=True, top_k=0, top_p=1.0, assistant_model=drafter)
        counts[out[0, prompt.shape[1] + 1]] += 1
        copied += drafter.last_generation_stats["copied_rounds"]
    assert copied > 0
    assert_counts_follow(counts, exact)


def test_drafter_attached_to_another_model_is_refused():
    """Passing a drafter attached to model A to model B's generate raises instead of drafting blind."""
    attached = make_tiny_target("llama", seed=0)
    other = make_tiny_target("llama", seed=1)
    drafter = CoralDrafter.from_target(attached, draft_length=2)
    with pytest.raises(RuntimeError, match="attached to another model"):
        other.generate(_prompt(0, length=4, vocab=96), max_new_tokens=8, do_sample=False, assistant_model=drafter)


@pytest.mark.parametrize("family", FAMILIES)
def test_copy_streak_skips_the_drafter_and_stays_lossless(family, monkeypatch):
    """After a fully accepted copy, rounds that find a copy run no drafter forward; outputs still equal plain."""
    target = make_tiny_target(family)
    drafter = CoralDrafter.from_target(target, draft_length=4, prompt_lookup_tokens=4, copy_confidence=1.0)
    forwards = {"count": 0}
    forward = CoralDrafter.forward

    def counted(self, *args, **kwargs):
        forwards["count"] += 1
        return forward(self, *args, **kwargs)

    monkeypatch.setattr(CoralDrafter, "forward", counted)
    calls, copy_only = {}, {}
    for after in (0, 1):
        drafter.generation_config.copy_only_after = after
        forwards["count"] = 0
        copy_only[after] = _assert_hybrid_identical(target, drafter, max_new_tokens=40)["copy_only_rounds"]
        calls[after] = forwards["count"]
    assert copy_only[0] == 0 < copy_only[1]
    assert calls[1] < calls[0]
    with pytest.raises(ValueError, match="copy_only_after must be >= 0"):
        CoralDrafter.from_target(target, copy_only_after=-1)


def _recorded_lookups(monkeypatch, module, argument: str) -> list[int]:
    """Patch `module.lookup_continuation` to record the `argument` ("max_ngram" or "num_tokens") of every call."""
    lookup = module.lookup_continuation
    asked: list[int] = []

    def recorded(sequence, max_ngram, num_tokens):
        asked.append({"max_ngram": max_ngram, "num_tokens": num_tokens}[argument])
        return lookup(sequence, max_ngram, num_tokens)

    monkeypatch.setattr(module, "lookup_continuation", recorded)
    return asked


def test_copy_only_rounds_propose_copy_only_tokens(monkeypatch):
    """The chain's copy-only rounds copy up to `copy_only_tokens` (longer than `prompt_lookup_tokens`); still plain
    greedy. The setting is validated like the others."""
    import coral_hf.generation as generation

    target = make_tiny_target("llama")
    drafter = CoralDrafter.from_target(target, draft_length=4, prompt_lookup_tokens=4, copy_confidence=1.0)
    asked = _recorded_lookups(monkeypatch, generation, "num_tokens")
    for copy_only_tokens in (None, 12):
        drafter.generation_config.copy_only_tokens = copy_only_tokens
        asked.clear()
        copy_only = _assert_hybrid_identical(target, drafter, max_new_tokens=40)["copy_only_rounds"]
        assert copy_only > 0 and max(asked) == (copy_only_tokens or 4)
    with pytest.raises(ValueError, match="copy_only_tokens must be >= 1"):
        CoralDrafter.from_target(target, copy_only_tokens=0)


@pytest.mark.parametrize("mode", ["chain", "tree"])
def test_copies_match_up_to_prompt_lookup_ngram(mode, monkeypatch):
    """The longest suffix a copy matches is the generation config's `max_matching_ngram_size`, written from
    `CoralConfig.prompt_lookup_ngram` (default 8); a generation config saved without it falls back to the config's.
    Chain and tree decoding both read it; the setting is validated like the others."""
    import coral_hf.generation as generation
    import coral_hf.tree_decoding as tree_decoding

    target = make_tiny_target("llama")
    drafter = CoralDrafter.from_target(target, draft_length=4, prompt_lookup_tokens=4, copy_confidence=1.0)
    assert drafter.generation_config.max_matching_ngram_size == drafter.config.prompt_lookup_ngram == 8
    asked = _recorded_lookups(monkeypatch, generation if mode == "chain" else tree_decoding, "max_ngram")
    for value, expected in ((3, 3), (None, 8)):
        drafter.generation_config.max_matching_ngram_size = value
        asked.clear()
        if mode == "chain":
            _assert_hybrid_identical(target, drafter, max_new_tokens=16)
        else:
            ids = torch.randint(1, 96, (1, 8), generator=torch.Generator().manual_seed(0))  # no pad token
            plain = target.generate(ids, max_new_tokens=16, do_sample=False)
            tree = target.generate(
                ids, max_new_tokens=16, do_sample=False, custom_generate=tree_generate, drafter=drafter
            )
            assert torch.equal(tree, plain)
        assert asked and set(asked) == {expected}
    with pytest.raises(ValueError, match="prompt_lookup_ngram must be >= 1"):
        CoralDrafter.from_target(target, prompt_lookup_ngram=0)


@pytest.mark.parametrize("mode", ["chain", "tree"])
def test_fused_layers_read_in_generation_are_the_ones_training_computes(mode, monkeypatch):
    target = make_tiny_target("llama")
    drafter = train_tiny_drafter(target, steps=150)  # accepts often: rollbacks and tree compaction happen
    drafter.add_fused_feature_layers([0])
    with torch.no_grad():
        drafter.fused_fc.weight.normal_(std=0.1)  # the fused layer now changes the drafts
    calls = []
    forward = drafter.forward

    def spy(**kwargs):
        if kwargs.get("fused_hidden_states") is not None:
            calls.append(
                {name: kwargs[name].clone() for name in ("position_ids", "hidden_states", "fused_hidden_states")}
            )
        return forward(**kwargs)

    monkeypatch.setattr(drafter, "forward", spy)
    mode_kwargs = (
        {"custom_generate": tree_generate, "drafter": drafter} if mode == "tree" else {"assistant_model": drafter}
    )
    prompt = _prompt(0, length=5, vocab=target.config.vocab_size)
    output = target.generate(prompt, max_new_tokens=40, do_sample=False, **mode_kwargs)
    assert torch.equal(output, target.generate(prompt, max_new_tokens=40, do_sample=False))
    assert len(calls) > 3
    features, fused = compute_fused_target_features(target, output, None, [0])
    for call in calls:  # every position the drafter read: the target's features of the output it accepted
        positions = call["position_ids"][0]
        torch.testing.assert_close(call["hidden_states"], features[:, positions], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(call["fused_hidden_states"], fused[:, positions], atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("decoding", ["chain", "tree"])
def test_bfloat16_target_warns_once_where_cpu_has_no_fast_bfloat16(monkeypatch, caplog, decoding):
    """On a CPU whose oneDNN has no bf16 kernels (no AVX-512), verifying several bf16 tokens costs several times one
    token's forward and speculation is slower than plain bf16 `generate`: the user is told once, and float32 targets
    (the fast path there) are not warned about."""
    monkeypatch.setattr("coral_hf.target_utils.packable_dtype", lambda dtype: dtype == torch.float32)
    _warn_slow_bf16_verification.cache_clear()
    prompt = _prompt(0, length=6, vocab=make_tiny_target().config.vocab_size)
    with caplog.at_level(logging.WARNING, logger="coral_hf.target_utils"):
        for dtype in (torch.float32, torch.bfloat16, torch.bfloat16):
            target = make_tiny_target().to(dtype)
            drafter = CoralDrafter.from_target(target).to(dtype)
            tree = {"custom_generate": tree_generate, "drafter": drafter}
            kwargs = {"assistant_model": drafter} if decoding == "chain" else tree
            target.generate(prompt, max_new_tokens=4, do_sample=False, **kwargs)
            warnings = [record.getMessage() for record in caplog.records]
            assert len(warnings) == (0 if dtype == torch.float32 else 1), warnings
    assert "bfloat16 on a CPU without oneDNN bf16 kernels" in warnings[0] and 'dtype="auto"' in warnings[0]
    _warn_slow_bf16_verification.cache_clear()
