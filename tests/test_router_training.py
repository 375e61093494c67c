"""The router stage of CORAL's lighter drafter: frozen drafter, router trained to cover the target's next token."""

from __future__ import annotations

import pytest
import torch

from coral_hf import CoralDrafter
from coral_hf.training.router import freeze_for_router_stage, router_loss, router_stage_loss

from .testing_utils import make_tiny_target, train_tiny_drafter


@pytest.fixture(scope="module")
def setup():
    target = make_tiny_target("llama", seed=1)
    return target, train_tiny_drafter(target, steps=200)


def _greedy_data(target, seed: int, num_sequences: int = 16) -> dict[str, torch.Tensor]:
    """The target's greedy continuations of random prompts, with its features, top-1 tokens and distributions."""
    prompts = torch.randint(
        1, target.config.vocab_size, (num_sequences, 4), generator=torch.Generator().manual_seed(seed)
    )
    with torch.no_grad():
        sequences = torch.cat(
            [target.generate(p[None], max_new_tokens=40, min_new_tokens=40, do_sample=False) for p in prompts]
        )
        features = target.model(sequences).last_hidden_state
        logits = target.lm_head(features)
    return {"input_ids": sequences, "features": features, "top1": logits.argmax(-1), "probs": logits.softmax(-1)}


def _router_step(drafter, data, soft: bool = False):
    """Router loss where the drafter's output at p (predicting f_{p+1}) is labelled with the target's top-1 there."""
    with torch.no_grad():
        predicted = drafter(
            input_ids=data["input_ids"][:, 1:], hidden_states=data["features"][:, :-1]
        ).last_hidden_state
    labels = data["top1"][:, 1:]
    group_mass = drafter.grouped_head.group_mass(data["probs"][:, 1:]) if soft else None
    return router_loss(drafter, predicted, labels, torch.ones_like(labels), target_group_mass=group_mass)


def _router_drafter(target, trained, **head):
    drafter = CoralDrafter.from_target(target, head_mode="router", num_groups=12, active_groups=2, **head)
    drafter.load_state_dict(trained.state_dict(), strict=False)  # the frozen, trained drafter + a fresh router
    return drafter


@pytest.mark.parametrize("strategy,soft", [("contiguous", False), ("cluster", False), ("cluster", True)])
def test_router_training_raises_coverage_and_keeps_the_drafter_frozen(setup, strategy, soft):
    target, trained = setup
    drafter = _router_drafter(target, trained, group_strategy=strategy)
    train, heldout = _greedy_data(target, seed=10), _greedy_data(target, seed=11)
    untrained = _router_step(drafter, heldout)[1]["router_coverage"]
    frozen = {name: value.clone() for name, value in drafter.state_dict().items() if "router" not in name}

    parameters = freeze_for_router_stage(drafter)
    assert {name for name, p in drafter.named_parameters() if p.requires_grad} == {
        f"grouped_head.router.{name}" for name in ("w1.weight", "w1.bias", "w2.weight", "w2.bias")
    }
    optimizer = torch.optim.AdamW(parameters, lr=1e-2)
    for _ in range(100):
        loss, metrics = _router_step(drafter, train, soft=soft)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    trained_coverage = _router_step(drafter, heldout)[1]["router_coverage"]

    assert metrics["router_coverage"] > 0.7
    assert trained_coverage > untrained + 0.15, (untrained, trained_coverage)
    for name, value in drafter.state_dict().items():
        if name in frozen:
            assert torch.equal(value, frozen[name]), name


def test_trained_router_drafts_losslessly_and_gets_drafts_accepted(setup):
    target, trained = setup
    drafter = _router_drafter(target, trained, group_strategy="cluster")
    optimizer = torch.optim.AdamW(freeze_for_router_stage(drafter), lr=1e-2)
    data = _greedy_data(target, seed=10)
    for _ in range(100):
        loss, _ = _router_step(drafter, data)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    tau = {}
    for mode in ("full", "router"):
        drafter.set_head_mode(mode)
        tokens = rounds = 0
        for seed in range(4):
            prompt = data["input_ids"][seed : seed + 1, :4]  # prompts the router was trained on
            plain = target.generate(prompt, max_new_tokens=30, do_sample=False)
            assisted = target.generate(prompt, max_new_tokens=30, do_sample=False, assistant_model=drafter)
            assert torch.equal(plain, assisted)
            tokens += assisted.shape[1] - prompt.shape[1]
            rounds += drafter.last_generation_stats["rounds"]
        tau[mode] = tokens / rounds
    assert tau["router"] > 1.3 and tau["router"] > 0.8 * tau["full"], tau


def test_router_stage_loss_trains_on_unrolled_predictions(setup):
    """The batch-level loss (same inputs as `coral_loss`) trains the router on every unrolled depth."""
    target, trained = setup
    drafter = _router_drafter(target, trained, group_strategy="cluster")
    train, heldout = _greedy_data(target, seed=10), _greedy_data(target, seed=11)
    loss_mask = torch.ones_like(train["input_ids"])
    loss_mask[:, :6] = 0  # the prompt (4 tokens) and the first generated token are not labels

    def batch_loss(data):
        return router_stage_loss(
            drafter, data["input_ids"], data["features"], loss_mask, torch.ones_like(loss_mask), unroll_steps=2
        )

    with torch.no_grad():
        untrained = batch_loss(heldout)[1]["router_coverage"]
    optimizer = torch.optim.AdamW(freeze_for_router_stage(drafter), lr=1e-2)
    for _ in range(80):
        loss, metrics = batch_loss(train)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert metrics["positions"] == loss_mask[:, 2:].sum().item()
    with torch.no_grad():
        assert batch_loss(heldout)[1]["router_coverage"] > untrained + 0.15


def test_router_loss_edge_cases(setup):
    target, trained = setup
    drafter = _router_drafter(target, trained)
    features = torch.randn(2, 3, 48)
    loss, metrics = router_loss(drafter, features, torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 3))
    assert loss.item() == 0.0 and metrics["router_positions"] == 0.0
    with pytest.raises(ValueError, match="init_grouped_head"):
        freeze_for_router_stage(trained)
    with pytest.raises(ValueError, match="init_grouped_head"):
        router_loss(trained, features, torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 3))
