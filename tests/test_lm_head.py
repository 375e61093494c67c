"""CORAL's grouped LM head: permutations, routed / shortlist logits, checkpointing, losslessness, timing."""

from __future__ import annotations

import pytest
import torch

from coral_hf import CoralConfig, CoralDrafter
from coral_hf.eval.timing import compare_draft_steps, time_draft_step
from coral_hf.lm_head import (
    cluster_permutation,
    frequency_permutation,
    frequency_shortlist,
    group_offsets,
    oracle_group_coverage,
    shortlist_coverage,
    token_frequencies,
    token_groups,
)

from .testing_utils import assert_counts_follow, exact_second_token_distribution, make_tiny_target, train_tiny_drafter

VOCAB = 96


def _prompt(seed: int, length: int, vocab: int = VOCAB) -> torch.LongTensor:
    return torch.randint(1, vocab, (1, length), generator=torch.Generator().manual_seed(seed))


def _token_counts(target, num_sequences: int = 8) -> torch.Tensor:
    """Token counts of the target's own greedy continuations (a stand-in for training data)."""
    with torch.no_grad():
        sequences = [
            target.generate(_prompt(100 + i, 3, target.config.vocab_size), max_new_tokens=30, do_sample=False)[0]
            for i in range(num_sequences)
        ]
    return token_frequencies(sequences, target.config.vocab_size)


@pytest.fixture(scope="module")
def llama_pair():
    target = make_tiny_target("llama", seed=1)
    return target, train_tiny_drafter(target, steps=200)


# ---------------------------------------------------------------- permutations


def test_group_offsets_are_balanced_and_cover_the_vocabulary():
    assert group_offsets(96, 8) == list(range(0, 97, 12))
    offsets = group_offsets(10, 4)
    assert offsets == [0, 3, 6, 8, 10]
    with pytest.raises(ValueError):
        group_offsets(10, 11)


def test_token_frequencies_count_only_masked_tokens():
    counts = token_frequencies([[1, 2, 2, 3], torch.tensor([3, 3])], vocab_size=5, masks=[[0, 1, 1, 1], [1, 0]])
    assert counts.tolist() == [0, 0, 2, 2, 0]


def test_frequency_permutation_and_shortlist():
    counts = torch.tensor([5, 0, 9, 5, 1, 9])
    assert frequency_permutation(counts).tolist() == [2, 5, 0, 3, 4, 1]  # ties keep id order
    assert frequency_shortlist(counts, 3).tolist() == [0, 2, 5]  # the 3 most frequent, sorted by id


def test_cluster_permutation_recovers_planted_clusters_deterministically():
    generator = torch.Generator().manual_seed(0)
    directions = torch.nn.functional.normalize(torch.randn(6, 32, generator=generator), dim=-1)
    labels = torch.randperm(60, generator=generator) % 6  # 6 clusters of 10 rows, shuffled ids
    weight = 5 * directions[labels] + 0.3 * torch.randn(60, 32, generator=generator)
    permutation = cluster_permutation(weight, num_groups=6, seed=1)
    assert torch.equal(permutation.sort().values, torch.arange(60))
    assert torch.equal(permutation, cluster_permutation(weight, num_groups=6, seed=1))
    groups = token_groups(permutation, 6)
    assert torch.bincount(groups).tolist() == [10] * 6  # balanced
    for group in range(6):  # every group is exactly one planted cluster
        assert labels[groups == group].unique().numel() == 1


def test_token_groups_inverts_the_permutation():
    permutation = torch.tensor([4, 0, 3, 1, 2])
    assert token_groups(permutation, 2).tolist() == [0, 1, 1, 0, 0]  # rows 0-2 (group 0) hold tokens 4, 0, 3


# ---------------------------------------------------------------- logits


@pytest.mark.parametrize("strategy", ["contiguous", "frequency", "cluster"])
def test_routed_draft_step_equals_masked_full_head(llama_pair, strategy):
    target, trained = llama_pair
    drafter = CoralDrafter.from_target(target, head_mode="router", num_groups=8, active_groups=3)
    drafter.load_state_dict(trained.state_dict(), strict=False)
    drafter.init_grouped_head(strategy=strategy, token_counts=_token_counts(target))
    with torch.no_grad():
        drafter.grouped_head.router.w2.weight.normal_(generator=torch.Generator().manual_seed(0))
    features = torch.randn(6, 48, generator=torch.Generator().manual_seed(1))
    full = drafter.compute_logits(features, head_mode="full")
    batched = drafter.compute_logits(features)  # several features: full head, inactive groups masked
    groups = token_groups(drafter.grouped_head.permutation, 8)
    for row in range(6):
        single = drafter.compute_logits(features[row : row + 1])  # one feature: sliced rows of 3 groups
        assert single.shape == (1, VOCAB) and single.dtype == torch.float32
        finite = torch.isfinite(single[0])
        assert finite.sum() == 3 * 12
        assert groups[finite].unique().numel() == 3  # exactly 3 whole groups are active
        torch.testing.assert_close(single[0][finite], full[row][finite])
        torch.testing.assert_close(single[0], batched[row])


def test_shortlist_logits_are_the_full_head_on_the_shortlist(llama_pair):
    target, _ = llama_pair
    counts = _token_counts(target)
    drafter = CoralDrafter.from_target(target, head_mode="shortlist", shortlist_size=20, token_counts=counts)
    features = torch.randn(2, 5, 48)
    logits = drafter.compute_logits(features)
    full = drafter.compute_logits(features, head_mode="full")
    shortlist = frequency_shortlist(counts, 20)
    assert torch.equal(drafter.grouped_head.shortlist, shortlist)
    assert torch.isfinite(logits).sum(-1).eq(20).all()
    torch.testing.assert_close(logits[..., shortlist], full[..., shortlist])


def test_untrained_router_on_frequency_groups_is_the_shortlist(llama_pair):
    """The router starts from the frequency prior: on frequency groups it activates the shortlist's tokens."""
    target, _ = llama_pair
    drafter = CoralDrafter.from_target(
        target,
        head_mode="router",
        group_strategy="frequency",
        num_groups=8,
        active_groups=2,
        token_counts=_token_counts(target),
    )
    assert drafter.config.shortlist_size == 24  # same head cost as the router: 2 of 8 groups of 12 rows
    logits = drafter.compute_logits(torch.randn(1, 48))
    assert torch.equal(torch.isfinite(logits[0]).nonzero().flatten(), drafter.grouped_head.shortlist)


def test_contiguous_head_shares_the_target_weight_and_follows_its_changes():
    target = make_tiny_target("llama", seed=2)
    drafter = CoralDrafter.from_target(target, head_mode="router", num_groups=4, active_groups=4)
    bound = drafter.grouped_head.bind(target.lm_head)
    assert bound.weight.data_ptr() == target.lm_head.weight.data_ptr()  # identity permutation: no copy
    features = torch.randn(1, 48)
    before = drafter.compute_logits(features)
    with torch.no_grad():
        target.lm_head.weight.mul_(2.0)
    torch.testing.assert_close(drafter.compute_logits(features), 2 * before)  # permuted copies are remade
    drafter.init_grouped_head(strategy="cluster")
    assert drafter.grouped_head.bind(target.lm_head).weight.data_ptr() != target.lm_head.weight.data_ptr()
    drafter.detach()
    assert drafter.grouped_head._bound is None


# ---------------------------------------------------------------- config, modes, checkpoint


def test_config_defaults_and_validation():
    target = make_tiny_target("llama")
    config = CoralConfig.from_target_config(target.config, head_mode="router")
    assert (config.num_groups, config.active_groups, config.group_strategy, config.shortlist_size) == (
        64,
        8,
        "contiguous",
        12,
    )
    assert CoralConfig.from_target_config(target.config).num_groups is None  # full head only: no grouped head
    for bad in ({"head_mode": "tree"}, {"num_groups": 200}, {"num_groups": 8, "active_groups": 9}):
        with pytest.raises(ValueError):
            CoralConfig.from_target_config(target.config, **bad)
    with pytest.raises(ValueError, match="group_strategy"):
        CoralConfig.from_target_config(target.config, num_groups=8, group_strategy="alphabetical")


def test_set_head_mode_switches_without_reloading_and_refuses_missing_head():
    target = make_tiny_target("llama")
    plain = CoralDrafter.from_target(target)
    assert plain.grouped_head is None
    with pytest.raises(ValueError, match="init_grouped_head"):
        plain.set_head_mode("router")
    drafter = CoralDrafter.from_target(target, head_mode="router", num_groups=8, active_groups=2)
    features = torch.randn(1, 48)
    assert torch.isfinite(drafter.compute_logits(features)).sum() == 24
    drafter.set_head_mode("router", active_groups=4)
    assert torch.isfinite(drafter.compute_logits(features)).sum() == 48
    drafter.set_head_mode("full")
    assert torch.isfinite(drafter.compute_logits(features)).all()
    with pytest.raises(ValueError):
        drafter.set_head_mode("router", active_groups=9)
    with pytest.raises(ValueError, match="frequency"):
        CoralDrafter.from_target(target, head_mode="router", group_strategy="frequency")


def test_checkpoint_holds_router_and_permutation_not_the_head(tmp_path, llama_pair):
    target, _ = llama_pair
    drafter = CoralDrafter.from_target(
        target,
        head_mode="router",
        num_groups=8,
        active_groups=2,
        group_strategy="cluster",
        token_counts=_token_counts(target),
    )
    with torch.no_grad():
        drafter.grouped_head.router.w2.weight.normal_()
    drafter.save_pretrained(tmp_path)
    state = drafter.state_dict()
    assert {key for key in state if key.startswith("grouped_head.")} == {
        "grouped_head.permutation",
        "grouped_head.shortlist",
        "grouped_head.router.w1.weight",
        "grouped_head.router.w1.bias",
        "grouped_head.router.w2.weight",
        "grouped_head.router.w2.bias",
    }
    plain_keys = set(CoralDrafter.from_target(target).state_dict())
    assert set(state) - plain_keys == {key for key in state if key.startswith("grouped_head.")}  # no head copy
    loaded = CoralDrafter.from_pretrained(tmp_path, target=target)
    assert loaded.head_mode == "router" and loaded.config.group_strategy == "cluster"
    for key in ("grouped_head.permutation", "grouped_head.shortlist", "grouped_head.router.w2.weight"):
        assert torch.equal(loaded.state_dict()[key], state[key])
    features = torch.randn(1, 48)
    torch.testing.assert_close(loaded.compute_logits(features), drafter.compute_logits(features))


# ---------------------------------------------------------------- lossless generation


@pytest.mark.parametrize(
    "family,head",
    [
        ("llama", {"head_mode": "router", "num_groups": 8, "active_groups": 1}),
        ("llama", {"head_mode": "router", "num_groups": 8, "active_groups": 3, "group_strategy": "frequency"}),
        ("llama", {"head_mode": "router", "num_groups": 12, "active_groups": 2, "group_strategy": "cluster"}),
        ("qwen2", {"head_mode": "router", "num_groups": 5, "active_groups": 2, "group_strategy": "cluster"}),
        ("llama", {"head_mode": "shortlist", "num_groups": 8, "shortlist_size": 10}),
        ("mistral", {"head_mode": "shortlist", "num_groups": 8, "shortlist_size": 60}),
    ],
)
def test_greedy_identical_in_every_head_mode(family, head):
    target = make_tiny_target(family, seed=6)
    trained = train_tiny_drafter(target, steps=100)
    drafter = CoralDrafter.from_target(target, draft_length=4, token_counts=_token_counts(target), **head)
    drafter.load_state_dict(trained.state_dict(), strict=False)  # trained layer, untrained router
    for seed in range(5):
        prompt = _prompt(seed, length=2 + 3 * seed)
        plain = target.generate(prompt, max_new_tokens=25, do_sample=False)
        assisted = target.generate(prompt, max_new_tokens=25, do_sample=False, assistant_model=drafter)
        assert torch.equal(plain, assisted), f"seed {seed}: {plain} != {assisted}"


def test_sampling_with_router_head_matches_target_distribution():
    """Chi-square test of the 2nd generated token against the exact target marginal (p < 1e-3 fails).

    The router activates 2 of 6 groups, so the drafter's q is zero on most tokens; speculative sampling stays exact
    only if the logits handed to transformers are the masked ones the draft was sampled from.
    """
    vocab = 24
    target = make_tiny_target("llama", seed=5, vocab_size=vocab)
    with torch.no_grad():
        target.lm_head.weight.mul_(0.25)  # spread the distribution: many tokens carry mass
    trained = train_tiny_drafter(target, steps=150)
    drafter = CoralDrafter.from_target(target, head_mode="router", num_groups=6, active_groups=2)
    drafter.load_state_dict(trained.state_dict(), strict=False)
    with torch.no_grad():
        drafter.grouped_head.router.w2.weight.normal_(generator=torch.Generator().manual_seed(0))
    prompt = _prompt(0, length=4, vocab=vocab)
    exact = exact_second_token_distribution(target, prompt)
    samples = 2500
    counts = torch.zeros(vocab)
    torch.manual_seed(0)
    for _ in range(samples):
        out = target.generate(prompt, max_new_tokens=3, do_sample=True, top_k=0, top_p=1.0, assistant_model=drafter)
        counts[out[0, prompt.shape[1] + 1]] += 1
    assert_counts_follow(counts, exact)


# ---------------------------------------------------------------- measurement


def test_coverage_measures():
    probs = torch.tensor([[0.5, 0.3, 0.1, 0.1], [0.1, 0.1, 0.2, 0.6]])
    groups = torch.tensor([0, 1, 1, 0])  # group 0 = tokens {0, 3}, group 1 = {1, 2}
    oracle = oracle_group_coverage(probs, groups, num_groups=2, active_groups=1)
    assert oracle["top1"] == 1.0 and oracle["mass"] == pytest.approx((0.6 + 0.7) / 2)
    shortlist = shortlist_coverage(probs, torch.tensor([0, 1]))
    assert shortlist["top1"] == 0.5 and shortlist["mass"] == pytest.approx((0.8 + 0.2) / 2)


def test_draft_step_timing_reports_layer_and_head_and_restores_the_mode():
    target = make_tiny_target("llama")
    drafter = CoralDrafter.from_target(target, head_mode="router", num_groups=8, active_groups=2)
    timing = time_draft_step(drafter, context_length=16, repetitions=3, warmup=1)
    assert set(timing) == {"draft_step_ms", "layer_ms", "lm_head_ms"} and all(v > 0 for v in timing.values())
    compared = compare_draft_steps(
        {"full": (drafter, {"mode": "full"}), "router": (drafter, {"mode": "router", "active_groups": 1})},
        context_length=16,
        repetitions=3,
        warmup=1,
    )
    assert set(compared) == {"full", "router"}
    assert drafter.head_mode == "router" and drafter.config.active_groups == 2
