"""Multi-step unrolled training reproduces exactly what the drafter sees when drafting at depth s."""

from __future__ import annotations

import pytest
import torch
from transformers import GenerationConfig

from coral_hf import CoralDrafter
from coral_hf.generation import CoralCandidateGenerator
from coral_hf.training.feature_cache import compute_fused_target_features
from coral_hf.training.objective import CoralLossConfig, coral_loss
from coral_hf.training.unroll import multi_step_attention_mask, unrolled_forward

from .testing_utils import FAMILIES, make_tiny_target


def test_step_one_mask_is_causal_and_later_steps_follow_the_draft_chain():
    assert torch.equal(multi_step_attention_mask(4, 1)[0, 0], torch.ones(4, 4).tril().bool())
    mask = multi_step_attention_mask(5, 3)[0, 0]  # query p of step 3
    p = 4
    real_block, step2_block, step3_block = mask[p, :5], mask[p, 5:10], mask[p, 10:]
    assert real_block.tolist() == [True, True, True, False, False]  # real features up to p - 2
    assert step2_block.nonzero().flatten().tolist() == [p - 1]  # depth-1 prediction of f_{p-1}
    assert step3_block.nonzero().flatten().tolist() == [p]  # depth-2 prediction of f_p


@pytest.mark.parametrize("fused_layers", [None, [1, 0]])
@pytest.mark.parametrize("family", FAMILIES)
def test_unrolled_step_s_equals_inference_draft_depth_s(family, fused_layers):
    target = make_tiny_target(family)
    drafter = CoralDrafter.from_target(target, num_draft_layers=2, fused_feature_layers=fused_layers)
    with torch.no_grad():
        for parameter in drafter.parameters():  # a random drafter far from identity, so depths really differ
            parameter.add_(torch.randn_like(parameter) * 0.05)
    depth = 4
    prefix = torch.randint(1, target.config.vocab_size, (1, 9), generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        prefix_features, prefix_fused = compute_fused_target_features(target, prefix, None, fused_layers or [0])

        # Inference path: the candidate generator drafts `depth` tokens from the verified prefix.
        generator = CoralCandidateGenerator(drafter, GenerationConfig(do_sample=False))
        drafter.feature_recorder.features = prefix_features[:, :-1]  # the target has verified positions 0..n-2
        if fused_layers:
            drafter.feature_recorder.fused_features = prefix_fused[:, :-1]
        drafted, draft_logits = generator.get_candidates(prefix, max_new_tokens=depth)
        assert draft_logits.shape[1] == depth

        # Training path on the drafted sequence: real target features everywhere, the mask decides what is seen.
        sequence_features, sequence_fused = compute_fused_target_features(target, drafted, None, fused_layers or [0])
        steps = unrolled_forward(
            drafter,
            drafted,
            sequence_features,
            num_steps=depth,
            fused_features=sequence_fused if fused_layers else None,
        )

    n = prefix.shape[1]
    for s in range(1, depth + 1):
        position = n - 3 + s
        unrolled_logits = drafter.compute_logits(steps[s - 1][:, position])
        torch.testing.assert_close(unrolled_logits, draft_logits[:, s - 1], rtol=1e-4, atol=1e-4)


def test_unrolled_depths_differ_so_the_test_above_can_fail():
    target = make_tiny_target("llama")
    drafter = CoralDrafter.from_target(target)
    ids = torch.randint(1, target.config.vocab_size, (1, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        features = target.model(ids).last_hidden_state
        steps = unrolled_forward(drafter, ids, features, num_steps=3)
    assert not torch.allclose(steps[0][:, 5], steps[2][:, 5], atol=1e-3)


def test_coral_loss_backpropagates_into_drafter_only_and_reports_metrics():
    target = make_tiny_target("llama")
    drafter = CoralDrafter.from_target(target)
    ids = torch.randint(1, target.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    loss_mask = torch.zeros_like(ids)
    loss_mask[:, 6:] = 1
    attention_mask = torch.ones_like(ids)
    attention_mask[1, 12:] = 0
    with torch.no_grad():
        features = target.model(ids, attention_mask=attention_mask).last_hidden_state
    config = CoralLossConfig(unroll_steps=3, csra_weight=0.5, topk_weight=0.1)
    loss, metrics = coral_loss(drafter, ids, features, loss_mask, attention_mask, config)
    loss.backward()
    assert torch.isfinite(loss)
    assert metrics["positions"] == 10 + 6
    assert {"acc_step_1", "acc_step_3", "loss_step_2", "csra", "feature_loss", "ce_loss"} <= metrics.keys()
    assert all(p.grad is not None for p in drafter.parameters() if p.requires_grad)
    assert all(p.grad is None for p in target.parameters())


def test_logit_positions_bounds_vocabulary_terms_but_keeps_every_feature_position():
    target = make_tiny_target("llama")
    drafter = CoralDrafter.from_target(target)
    ids = torch.randint(1, target.config.vocab_size, (2, 16), generator=torch.Generator().manual_seed(0))
    loss_mask = torch.ones_like(ids)
    with torch.no_grad():
        features = target.model(ids).last_hidden_state
    full, full_metrics = coral_loss(drafter, ids, features, loss_mask, None, CoralLossConfig(unroll_steps=2))
    subset_config = CoralLossConfig(unroll_steps=2, logit_positions=5)
    subset, metrics = coral_loss(drafter, ids, features, loss_mask, None, subset_config, torch.Generator())
    subset.backward()
    assert metrics["positions"] == full_metrics["positions"] == 28
    assert metrics["feature_loss"] == pytest.approx(full_metrics["feature_loss"])  # all positions, both runs
    assert metrics["ce_loss"] != pytest.approx(full_metrics["ce_loss"])  # 5 of 28 positions
    assert drafter.fc.weight.grad is not None
