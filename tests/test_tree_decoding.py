"""Tree decoding (`custom_generate=coral_hf.tree_generate`): lossless greedy and sampling, limits, refusals."""

from __future__ import annotations

import pytest
import torch
from transformers import StoppingCriteria, StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer

from coral_hf import CoralDrafter, tree_generate
from coral_hf.eval.bench import RoundRecorder
from coral_hf.tree_decoding import sample_among_candidates, tree_ancestor_mask

from .testing_utils import (
    FAMILIES,
    assert_counts_follow,
    exact_second_and_third_token_distributions,
    exact_second_token_distribution,
    make_tiny_target,
    train_tiny_drafter,
)


def _prompt(seed: int, length: int, vocab: int = 96) -> torch.LongTensor:
    return torch.randint(1, vocab, (1, length), generator=torch.Generator().manual_seed(seed))


def _tree(target, prompt, drafter, **kwargs):
    return target.generate(prompt, custom_generate=tree_generate, drafter=drafter, **kwargs)


# ---------------------------------------------------------------- pieces


def test_ancestor_mask_lets_each_node_see_its_path_only():
    #      0
    #    1   2
    #    3     4
    mask = tree_ancestor_mask(torch.tensor([-1, 0, 0, 1, 2]))
    assert mask[3].nonzero().flatten().tolist() == [0, 1, 3]
    assert mask[4].nonzero().flatten().tolist() == [0, 2, 4]
    assert mask[0].nonzero().flatten().tolist() == [0]
    with pytest.raises(ValueError, match="parents first"):
        tree_ancestor_mask(torch.tensor([-1, 2, 0]))


def _wrong_sample_among_candidates(probs, candidates):
    """A plausible bug: after a rejection, try the next candidate against the *original* distribution."""
    for index, token in enumerate(candidates):
        if torch.rand(()) < probs[token]:
            return index, token
    return None, int(torch.multinomial(probs, 1))


def test_sibling_rejection_sampling_is_exact_and_the_wrong_variant_is_caught():
    probs = torch.tensor([0.05, 0.30, 0.10, 0.25, 0.20, 0.10])
    candidates = [3, 1, 4]  # deterministic proposals holding most of the mass
    torch.manual_seed(0)
    counts, wrong = torch.zeros(6), torch.zeros(6)
    for _ in range(4000):
        counts[sample_among_candidates(probs, candidates)[1]] += 1
        wrong[_wrong_sample_among_candidates(probs, candidates)[1]] += 1
    assert_counts_follow(counts, probs)
    with pytest.raises(AssertionError, match="chi2"):
        assert_counts_follow(wrong, probs)


# ---------------------------------------------------------------- greedy is lossless


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_identical_with_random_drafter(family):
    target = make_tiny_target(family)
    drafter = CoralDrafter.from_target(target)
    for seed in range(5):
        prompt = _prompt(seed, length=1 + seed * 3)
        plain = target.generate(prompt, max_new_tokens=25, do_sample=False)
        assert torch.equal(plain, _tree(target, prompt, drafter, max_new_tokens=25, do_sample=False)), seed


def test_tree_beats_the_chain_of_the_same_drafter(trained_llama_pair):
    """Greedy identical, and more tokens per target forward than the chain (one target forward per round)."""
    target, drafter = trained_llama_pair
    tree_tokens = tree_forwards = chain_tokens = chain_forwards = 0
    for seed in range(8):
        prompt = _prompt(seed, length=4)
        plain = target.generate(prompt, max_new_tokens=40, do_sample=False)
        # A tree sized for a drafter that accepts a lot (the defaults suit the shipped SmolLM2 drafter).
        tree = _tree(target, prompt, drafter, max_new_tokens=40, do_sample=False, tree_total_tokens=16, tree_depth=5)
        assert torch.equal(plain, tree), seed
        tree_tokens += tree.shape[1] - 4
        tree_forwards += drafter.last_generation_stats["rounds"] + 1  # + the prompt's forward
        rounds = RoundRecorder()
        target.generate(prompt, max_new_tokens=40, do_sample=False, assistant_model=drafter, streamer=rounds)
        chain_tokens += 40
        chain_forwards += len(rounds.round_sizes)
    assert tree_tokens / tree_forwards > chain_tokens / chain_forwards + 0.3


@pytest.mark.parametrize("max_new_tokens", [1, 2, 3, 7])
def test_max_new_tokens_reached_mid_path(trained_llama_pair, max_new_tokens):
    target, drafter = trained_llama_pair
    for seed in range(3):
        prompt = _prompt(seed, length=4)
        plain = target.generate(prompt, max_new_tokens=max_new_tokens, do_sample=False)
        tree = _tree(target, prompt, drafter, max_new_tokens=max_new_tokens, do_sample=False)
        assert torch.equal(plain, tree)


def test_eos_inside_the_tree_stops_like_plain():
    target = make_tiny_target("llama", seed=3, eos_token_id=7)
    drafter = train_tiny_drafter(target, steps=100)
    stopped_early = False
    for seed in range(10):
        prompt = _prompt(seed, length=3)
        plain = target.generate(prompt, max_new_tokens=30, do_sample=False)
        assert torch.equal(plain, _tree(target, prompt, drafter, max_new_tokens=30, do_sample=False))
        stopped_early |= plain.shape[1] < prompt.shape[1] + 30
    assert stopped_early, "no prompt hit EOS: the EOS path was not exercised"


def test_context_dependent_processor_sees_each_nodes_own_path(trained_llama_pair):
    """A repetition penalty depends on the tokens before each node: the tree must apply it per path."""
    target, drafter = trained_llama_pair
    for seed in range(4):
        prompt = _prompt(seed, length=4)
        kwargs = dict(max_new_tokens=30, do_sample=False, repetition_penalty=1.8)
        assert torch.equal(target.generate(prompt, **kwargs), _tree(target, prompt, drafter, **kwargs))


def test_custom_stopping_criteria_and_streamer(trained_llama_pair):
    target, drafter = trained_llama_pair

    class StopAfterToken(StoppingCriteria):
        def __init__(self, token):
            self.token = token

        def __call__(self, input_ids, scores, **kwargs):
            return input_ids[:, -1] == self.token

    class Collect(BaseStreamer):
        def __init__(self):
            self.tokens, self.ended = [], False

        def put(self, value):
            self.tokens.extend(value.flatten().tolist())

        def end(self):
            self.ended = True

    prompt = _prompt(1, length=5)
    stop_token = int(target.generate(prompt, max_new_tokens=12, do_sample=False)[0, -1])
    criteria = StoppingCriteriaList([StopAfterToken(stop_token)])
    plain = target.generate(prompt, max_new_tokens=30, do_sample=False, stopping_criteria=criteria)
    streamer = Collect()
    tree = _tree(
        target, prompt, drafter, max_new_tokens=30, do_sample=False, stopping_criteria=criteria, tree_streamer=streamer
    )
    assert torch.equal(plain, tree) and tree[0, -1] == stop_token
    assert streamer.tokens == tree[0].tolist() and streamer.ended


def test_prompt_lookup_branch_stays_lossless():
    """Copy branches (also proposed alone during a streak of accepted copies) keep the tree's output plain greedy."""
    target = make_tiny_target("qwen2")
    drafter = CoralDrafter.from_target(target, prompt_lookup_tokens=8)  # an untrained drafter: copies do the work
    accepted, copy_only = {}, {}
    for lookup, after in ((8, 1), (8, 0), (None, 1)):
        drafter.generation_config.prompt_lookup_num_tokens = lookup
        drafter.generation_config.copy_only_after = after
        accepted[lookup, after] = copy_only[lookup, after] = 0
        for seed in range(5):
            phrase = _prompt(seed, length=5)
            prompt = torch.cat([phrase, _prompt(seed + 100, length=2), phrase, phrase[:, :2]], dim=1)
            plain = target.generate(prompt, max_new_tokens=30, do_sample=False)
            assert torch.equal(plain, _tree(target, prompt, drafter, max_new_tokens=30, do_sample=False, tree_depth=2))
            accepted[lookup, after] += drafter.last_generation_stats["accepted"]
            copy_only[lookup, after] += drafter.last_generation_stats["copy_only_rounds"]
    assert accepted[8, 0] > accepted[None, 1]  # the copy branch, longer than the tree's depth, got accepted
    assert copy_only[8, 1] > 0 and copy_only[8, 0] == copy_only[None, 1] == 0


def test_copies_off_the_drafters_top1_are_capped_and_stay_lossless():
    """`tree_unmatched_copy_tokens` caps a copy branch that does not start with the drafter's top-1 (an untrained
    drafter's top-1 rarely matches): fewer verified nodes per round, the same greedy output."""
    target = make_tiny_target("qwen2")
    drafter = CoralDrafter.from_target(target, prompt_lookup_tokens=8, copy_only_after=0)
    drafted = {}
    for cap in (0, 2, 8):
        drafted[cap] = 0
        for seed in range(4):
            phrase = _prompt(seed, length=5)
            prompt = torch.cat([phrase, _prompt(seed + 100, length=2), phrase, phrase[:, :2]], dim=1)
            plain = target.generate(prompt, max_new_tokens=24, do_sample=False)
            tree = _tree(target, prompt, drafter, max_new_tokens=24, do_sample=False, tree_unmatched_copy_tokens=cap)
            assert torch.equal(plain, tree), f"cap {cap}, seed {seed}"
            drafted[cap] += drafter.last_generation_stats["drafted"] / drafter.last_generation_stats["rounds"]
    assert drafted[0] < drafted[2] < drafted[8]
    with pytest.raises(ValueError, match="tree_unmatched_copy_tokens must be >= 0"):
        _tree(target, prompt, drafter, max_new_tokens=4, tree_unmatched_copy_tokens=-1)


def test_tree_settings_per_call_and_scores(trained_llama_pair):
    target, drafter = trained_llama_pair
    prompt = _prompt(0, length=4)
    plain = target.generate(
        prompt, max_new_tokens=20, do_sample=False, return_dict_in_generate=True, output_scores=True
    )
    out = _tree(
        target,
        prompt,
        drafter,
        max_new_tokens=20,
        do_sample=False,
        tree_total_tokens=3,
        tree_depth=2,
        tree_top_k=1,
        return_dict_in_generate=True,
        output_scores=True,
    )
    assert torch.equal(plain.sequences, out.sequences)
    assert len(out.scores) == 20
    torch.testing.assert_close(torch.cat(out.scores), torch.cat(plain.scores), rtol=1e-4, atol=1e-4)
    assert drafter.last_generation_stats["drafted"] <= 2 * drafter.last_generation_stats["rounds"]


def test_confidence_threshold_stops_expanding_unsure_levels_and_stays_lossless(trained_llama_pair):
    target, drafter = trained_llama_pair
    plain = target.generate(_prompt(1, length=4), max_new_tokens=24, do_sample=False)
    forwards_per_round = {}
    for threshold in (0.0, 0.4, 1.0):
        out = _tree(
            target,
            _prompt(1, length=4),
            drafter,
            max_new_tokens=24,
            do_sample=False,
            tree_depth=4,
            tree_confidence_threshold=threshold,
        )
        assert torch.equal(out, plain)
        stats = drafter.last_generation_stats
        forwards_per_round[threshold] = stats["drafter_forwards"] / stats["rounds"]
    # 1.0: only the root's children are drafted (one forward per round); 0: all four levels; 0.4 in between. (The
    # rounds near max_new_tokens draft less: their depth is capped by the budget.)
    assert forwards_per_round[1.0] <= 1.0
    assert forwards_per_round[0.0] > 3.0
    assert forwards_per_round[1.0] < forwards_per_round[0.4] < forwards_per_round[0.0]
    with pytest.raises(ValueError, match="tree_confidence_threshold must be in"):
        _tree(target, _prompt(1, length=4), drafter, max_new_tokens=4, tree_confidence_threshold=1.5)
    with pytest.raises(ValueError, match="tree_confidence_threshold must be in"):
        CoralDrafter.from_target(target, tree_confidence_threshold=-0.1)


# ---------------------------------------------------------------- sampling is lossless


def _sample_second_and_third(target, drafter, prompt, samples, **kwargs):
    second, third = torch.zeros(target.config.vocab_size), torch.zeros(target.config.vocab_size)
    torch.manual_seed(0)
    for _ in range(samples):
        out = _tree(target, prompt, drafter, max_new_tokens=3, do_sample=True, top_p=1.0, **kwargs)
        second[out[0, prompt.shape[1] + 1]] += 1
        third[out[0, prompt.shape[1] + 2]] += 1
    return second, third


@pytest.fixture(scope="module")
def spread_pair():
    target = make_tiny_target("llama", seed=5, vocab_size=24)
    with torch.no_grad():
        target.lm_head.weight.mul_(0.25)  # spread the distribution: many tokens carry mass
    return target, train_tiny_drafter(target, steps=150)


@pytest.mark.parametrize("temperature,top_k", [(1.0, None), (0.7, 8)])
def test_tree_sampling_matches_target_distribution(spread_pair, temperature, top_k):
    """Chi-square tests of the 2nd and 3rd tokens (chosen at the root and at depth 1) against exact marginals."""
    target, drafter = spread_pair
    prompt = _prompt(0, length=4, vocab=24)
    exact_second, exact_third = exact_second_and_third_token_distributions(target, prompt, temperature, top_k)
    second, third = _sample_second_and_third(
        target, drafter, prompt, 2500, temperature=temperature, top_k=top_k or 0, tree_top_k=3
    )
    assert_counts_follow(second, exact_second)
    assert_counts_follow(third, exact_third)


def test_tree_sampling_test_catches_a_wrong_acceptance_rule(spread_pair, monkeypatch):
    target, drafter = spread_pair
    prompt = _prompt(0, length=4, vocab=24)
    exact_second = exact_second_token_distribution(target, prompt)
    monkeypatch.setattr("coral_hf.tree_decoding.sample_among_candidates", _wrong_sample_among_candidates)
    second, _ = _sample_second_and_third(target, drafter, prompt, 2500, top_k=0, tree_top_k=3)
    with pytest.raises(AssertionError, match="chi2"):
        assert_counts_follow(second, exact_second)


# ---------------------------------------------------------------- refused


def test_refusals_are_one_clear_error(trained_llama_pair):
    target, drafter = trained_llama_pair
    prompt = _prompt(0, length=4)
    with pytest.raises(TypeError, match="drafter=drafter"):
        target.generate(prompt, max_new_tokens=5, custom_generate=tree_generate)
    batch = torch.randint(1, 96, (2, 4))
    with pytest.raises(ValueError, match="batch size 1"):
        _tree(target, batch, drafter, attention_mask=torch.ones_like(batch), max_new_tokens=5)
    with pytest.raises(ValueError, match="num_beams=2"):
        _tree(target, prompt, drafter, max_new_tokens=5, num_beams=2)
    with pytest.raises(ValueError, match="tree_depth must be >= 1"):
        _tree(target, prompt, drafter, max_new_tokens=5, tree_depth=-1)
    padded = torch.ones_like(prompt)
    padded[0, 0] = 0
    with pytest.raises(ValueError, match="padded inputs"):
        _tree(target, prompt, drafter, attention_mask=padded, max_new_tokens=5)
    with pytest.raises(ValueError, match="does not return hidden_states"):
        _tree(target, prompt, drafter, max_new_tokens=5, return_dict_in_generate=True, output_hidden_states=True)
    other = make_tiny_target("llama", seed=9)
    with pytest.raises(RuntimeError, match="not attached to the model"):
        _tree(other, prompt, drafter, max_new_tokens=5)


def test_stop_strings_through_stopping_criteria_match_plain():
    """The documented way to stop at a string with tree decoding: a StopStringCriteria in stopping_criteria."""
    from transformers import StopStringCriteria

    from .testing_utils import make_chat_tokenizer

    tokenizer = make_chat_tokenizer(["the cat sat on the mat. the dog ran."], vocab_size=280)
    target = make_tiny_target("llama", seed=2, vocab_size=len(tokenizer))
    drafter = train_tiny_drafter(target, steps=60)
    prompt = _prompt(3, length=4, vocab=len(tokenizer))
    free = target.generate(prompt, max_new_tokens=20, do_sample=False)[0, 4:]
    for position in range(4, 12):  # a piece of text the greedy continuation produces, that stops plain early
        criteria = StoppingCriteriaList([StopStringCriteria(tokenizer, [tokenizer.decode(free[position])])])
        plain = target.generate(prompt, max_new_tokens=20, do_sample=False, stopping_criteria=criteria)
        if plain.shape[1] < 4 + 20:
            break
    tree = _tree(target, prompt, drafter, max_new_tokens=20, do_sample=False, stopping_criteria=criteria)
    assert torch.equal(plain, tree) and plain.shape[1] < 4 + 20


@pytest.mark.parametrize("head_mode", ["router", "shortlist"])
def test_lighter_heads_draft_trees_losslessly(head_mode):
    """Frontier rows go through the router / shortlist head together (each row its own groups)."""
    target = make_tiny_target("llama", seed=6)
    drafter = CoralDrafter.from_target(target, num_groups=8, active_groups=2, head_mode=head_mode)
    for seed in range(3):
        prompt = _prompt(seed, length=5)
        plain = target.generate(prompt, max_new_tokens=20, do_sample=False)
        assert torch.equal(plain, _tree(target, prompt, drafter, max_new_tokens=20, do_sample=False))


def test_tree_sampling_with_a_copy_branch_matches_target_distribution():
    """Copied nodes are deterministic proposals like drafted ones: the 2nd token's marginal stays exact."""
    target = make_tiny_target("llama", seed=2, vocab_size=24)
    with torch.no_grad():
        target.lm_head.weight.mul_(0.25)
    drafter = CoralDrafter.from_target(target, prompt_lookup_tokens=4)
    prompt = torch.tensor([[3, 7, 9, 3, 7, 9, 3]])  # after a first token 3, 7 or 9 the lookup has a copy
    exact_second = exact_second_token_distribution(target, prompt)
    second, _ = _sample_second_and_third(target, drafter, prompt, 2500, top_k=0)
    assert_counts_follow(second, exact_second)


def test_copy_only_rounds_propose_copy_only_tokens(monkeypatch):
    """Inside a streak of accepted copies the copy may be `copy_only_tokens` long (longer than the hybrid copy); the
    output stays plain greedy."""
    import coral_hf.tree_decoding as tree_decoding

    target = make_tiny_target("qwen2")
    drafter = CoralDrafter.from_target(target, prompt_lookup_tokens=4, copy_only_after=1)
    lookup = tree_decoding.lookup_continuation
    copies: list[tuple[int, int]] = []  # (tokens asked for, tokens copied)

    def recorded(sequence, max_ngram, num_tokens):
        copy = lookup(sequence, max_ngram, num_tokens)
        copies.append((num_tokens, 0 if copy is None else copy.shape[0]))
        return copy

    monkeypatch.setattr(tree_decoding, "lookup_continuation", recorded)
    longest = {}
    for copy_only_tokens in (None, 12):
        drafter.generation_config.copy_only_tokens = copy_only_tokens
        copies.clear()
        for seed in range(5):
            phrase = _prompt(seed, length=12)
            prompt = torch.cat([phrase, _prompt(seed + 100, length=2), phrase, phrase[:, :2]], dim=1)
            plain = target.generate(prompt, max_new_tokens=30, do_sample=False)
            assert torch.equal(plain, _tree(target, prompt, drafter, max_new_tokens=30, do_sample=False))
        longest[copy_only_tokens] = max(copied for _, copied in copies)
        assert max(asked for asked, _ in copies) == (copy_only_tokens or 4)
    assert longest[None] <= 4 < longest[12]
