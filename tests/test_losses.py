import math

import pytest
import torch
import torch.nn.functional as F

from coral_hf.training.losses import (
    csra_loss,
    feature_regression_loss,
    simulated_acceptance_length,
    soft_cross_entropy,
    topk_distillation_loss,
)


def test_feature_regression_known_value_and_masking():
    pred = torch.tensor([[[0.5, 0.0], [3.0, 0.0], [float("nan"), 100.0]]], requires_grad=True)
    target = torch.zeros(1, 3, 2)
    mask = torch.tensor([[1, 1, 0]])
    loss = feature_regression_loss(pred, target, mask)
    # position 0: (0.5 * 0.5^2 + 0) / 2; position 1: ((3 - 0.5) + 0) / 2
    assert loss.item() == pytest.approx((0.0625 + 1.25) / 2)
    loss.backward()
    assert pred.grad[0, 2].eq(0).all() and pred.grad[0, :2].abs().sum() > 0


def test_soft_cross_entropy_known_value():
    student = torch.tensor([[[0.0, 0.0], [0.0, math.log(3.0)], [7.0, -7.0]]])
    teacher = torch.tensor([[[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]])
    loss = soft_cross_entropy(student, teacher, torch.tensor([[1, 1, 0]]))
    expected = (math.log(2.0) + 0.5 * (math.log(4.0) + math.log(4.0 / 3.0))) / 2
    assert loss.item() == pytest.approx(expected)


def test_soft_cross_entropy_is_minimal_at_the_teacher_distribution():
    teacher_logits = torch.randn(2, 3, 7, generator=torch.Generator().manual_seed(0))
    teacher = teacher_logits.softmax(-1)
    mask = torch.ones(2, 3)
    entropy = -(teacher * teacher.log()).sum(-1).mean()
    assert soft_cross_entropy(teacher_logits, teacher, mask).item() == pytest.approx(entropy.item(), rel=1e-5)
    assert soft_cross_entropy(torch.zeros(2, 3, 7), teacher, mask) > entropy


def test_topk_distillation_known_value_and_restriction():
    teacher = torch.tensor([[[math.log(4.0), math.log(3.0), math.log(2.0), 0.0]]])
    student = torch.tensor([[[0.0, math.log(2.0), 5.0, 7.0]]])
    mask = torch.ones(1, 1)
    loss = topk_distillation_loss(student, teacher, mask, k=2)
    # teacher renormalised over tokens {0, 1}: (4/7, 3/7); student over the same tokens: (1/3, 2/3)
    expected = -(4 / 7 * math.log(1 / 3) + 3 / 7 * math.log(2 / 3))
    assert loss.item() == pytest.approx(expected)
    # logits outside the teacher's top-K do not matter
    other = student.clone()
    other[..., 2:] = torch.tensor([-3.0, 40.0])
    assert topk_distillation_loss(other, teacher, mask, k=2).item() == pytest.approx(expected)
    # with K >= V it is the full soft cross-entropy
    full = soft_cross_entropy(student, teacher.softmax(-1), mask)
    assert topk_distillation_loss(student, teacher, mask, k=10).item() == pytest.approx(full.item())


def test_masked_positions_do_not_matter_and_empty_mask_is_zero():
    generator = torch.Generator().manual_seed(0)
    student = torch.randn(2, 4, 9, generator=generator, requires_grad=True)
    teacher_logits = torch.randn(2, 4, 9, generator=generator)
    pred, target = torch.randn(2, 4, 5, generator=generator), torch.randn(2, 4, 5, generator=generator)
    mask = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 0]])
    garbage = (mask == 0).unsqueeze(-1)

    for fn, args in (
        (soft_cross_entropy, (student, teacher_logits.softmax(-1))),
        (topk_distillation_loss, (student, teacher_logits)),
        (feature_regression_loss, (pred, target)),
    ):
        changed = [arg.detach().masked_fill(garbage, float("inf")) for arg in args]
        assert fn(*args, mask).item() == pytest.approx(fn(*changed, mask).item())
        zero = fn(*args, torch.zeros_like(mask))
        assert zero.item() == 0.0

    zero = soft_cross_entropy(student, teacher_logits.softmax(-1), torch.zeros_like(mask))
    zero.backward()
    assert student.grad is not None and student.grad.eq(0).all()


def test_losses_return_float32_for_bf16_inputs():
    student = torch.randn(1, 3, 8).to(torch.bfloat16)
    teacher = torch.randn(1, 3, 8).softmax(-1).to(torch.bfloat16)
    assert soft_cross_entropy(student, teacher, torch.ones(1, 3)).dtype == torch.float32


# CSRA


def pair_ce(z_query, z_key, temperature):
    logits = F.normalize(z_query, dim=-1) @ F.normalize(z_key, dim=-1).T / temperature
    return F.cross_entropy(logits, torch.arange(len(z_query)))


def test_csra_known_value():
    identity = torch.eye(2)
    assert csra_loss([identity, identity], temperature=1.0).item() == pytest.approx(math.log(1 + math.exp(-1)))
    assert csra_loss([identity, 3 * identity], temperature=0.5).item() == pytest.approx(math.log(1 + math.exp(-2)))
    swapped = identity.flip(0)
    assert csra_loss([identity, swapped], temperature=1.0).item() == pytest.approx(math.log(1 + math.exp(1)))


def test_csra_is_lowest_when_steps_agree():
    x = torch.randn(16, 8, generator=torch.Generator().manual_seed(0))
    agree = csra_loss([x, x, x])
    noisy = csra_loss([x, x + 0.3 * torch.randn(16, 8, generator=torch.Generator().manual_seed(1)), x])
    shuffled = csra_loss([x, x[torch.randperm(16, generator=torch.Generator().manual_seed(2))], x])
    assert agree < noisy < shuffled


def test_csra_temperature_direction():
    x = torch.randn(16, 8, generator=torch.Generator().manual_seed(0))
    shuffled = x[torch.randperm(16, generator=torch.Generator().manual_seed(1))]
    # sharper softmax: aligned steps get closer to zero loss, misaligned ones are punished harder
    assert csra_loss([x, x], temperature=0.05) < csra_loss([x, x], temperature=0.2)
    assert csra_loss([x, shuffled], temperature=0.05) > csra_loss([x, shuffled], temperature=0.2)


def test_csra_pairing_variants():
    steps = torch.randn(3, 6, 4, generator=torch.Generator().manual_seed(0))
    t = 0.1
    all_pairs = [(s, u) for s in range(3) for u in range(3) if s != u]
    anchor_pairs = [(0, 1), (0, 2), (1, 0), (2, 0)]
    expected_all = sum(pair_ce(steps[s], steps[u], t) for s, u in all_pairs) / len(all_pairs)
    expected_anchor = sum(pair_ce(steps[s], steps[u], t) for s, u in anchor_pairs) / len(anchor_pairs)
    assert csra_loss(steps, t, pairing="all").item() == pytest.approx(expected_all.item(), rel=1e-5)
    assert csra_loss(list(steps), t, pairing="anchor").item() == pytest.approx(expected_anchor.item(), rel=1e-5)
    # with two steps both pairings are the same
    assert csra_loss(steps[:2], t, "all").item() == pytest.approx(csra_loss(steps[:2], t, "anchor").item())
    with pytest.raises(ValueError, match="pairing"):
        csra_loss(steps, pairing="chain")


def test_csra_gradients_and_stop_grad_positive():
    generator = torch.Generator().manual_seed(0)
    z0 = torch.randn(5, 4, generator=generator, requires_grad=True)
    z1 = torch.randn(5, 4, generator=generator, requires_grad=True)
    csra_loss([z0, z1]).backward()
    assert z0.grad.abs().sum() > 0 and z1.grad.abs().sum() > 0

    # with stop-grad, each step gets gradient only as the query of its pair
    grads = []
    for stop in (True, False):
        a, b = z0.detach().clone().requires_grad_(), z1.detach().clone().requires_grad_()
        csra_loss([a, b], temperature=0.1, stop_grad_positive=stop).backward()
        grads.append(b.grad)
    b = z1.detach().clone().requires_grad_()
    (pair_ce(b, z0.detach(), 0.1) / 2).backward()
    assert torch.allclose(grads[0], b.grad, atol=1e-6)
    assert not torch.allclose(grads[1], b.grad, atol=1e-6)


def test_csra_mask_selects_positions():
    steps = torch.randn(2, 2, 3, 4, generator=torch.Generator().manual_seed(0))  # [S, B, T, H]
    mask = torch.tensor([[1, 0, 1], [0, 1, 0]])
    expected = csra_loss(steps[:, mask.bool()])
    changed = steps.clone()
    changed[:, ~mask.bool()] = 1e3
    assert csra_loss(list(changed), mask=mask).item() == pytest.approx(expected.item())


def test_csra_subsampling_is_reproducible():
    steps = torch.randn(2, 50, 8, generator=torch.Generator().manual_seed(0))

    def subsampled(seed):
        return csra_loss(steps, max_positions=10, generator=torch.Generator().manual_seed(seed))

    assert subsampled(0).item() == subsampled(0).item()
    assert subsampled(0).item() != subsampled(1).item()
    keep = torch.randperm(50, generator=torch.Generator().manual_seed(0))[:10]
    assert subsampled(0).item() == pytest.approx(csra_loss(steps[:, keep]).item())
    assert csra_loss(steps, max_positions=50).item() == csra_loss(steps).item()


@pytest.mark.parametrize("shape", [(1, 6, 4), (3, 1, 4), (2, 0, 4)])
def test_csra_degenerate_inputs_give_a_backpropagating_zero(shape):
    steps = torch.randn(*shape, requires_grad=True)
    loss = csra_loss(steps)
    assert loss.item() == 0.0
    loss.backward()
    assert steps.grad.eq(0).all()


def test_simulated_acceptance_length():
    assert simulated_acceptance_length([]) == 1.0
    assert simulated_acceptance_length([1.0, 1.0, 1.0]) == 4.0
    assert simulated_acceptance_length([0.5, 0.5]) == pytest.approx(1.75)
    assert simulated_acceptance_length([0.8, 0.5, 0.0, 1.0]) == pytest.approx(2.2)
    with pytest.raises(ValueError):
        simulated_acceptance_length([1.2])
