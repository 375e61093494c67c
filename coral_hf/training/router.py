"""The router training stage of CORAL's lighter drafter: the drafter is frozen, only the group router learns.

The router reads the drafter's predicted feature `h` (the same tensor it reads while drafting) and must rank first
the vocabulary group that holds the token the target will produce. Its label is therefore the group of the target's
top-1 token at that position (`argmax` of the target distribution q, which is also what greedy verification
accepts). Passing `target_group_mass` switches to a soft label, the probability mass of q in each group
(`drafter.grouped_head.group_mass(q)`): it also teaches the order of the runner-up groups, which matters because
k > 1 groups are active, and it is what bounds acceptance under sampling.

Coverage, the fraction of positions whose target top-1 token lies in the router's top-k groups, bounds the
drafter's greedy acceptance in router mode: a draft can only be accepted where it is covered.

Measured on SmolLM2-135M / ShareGPT (docs/lighter_drafter.md), soft labels give higher held-out coverage than hard
ones, so `router_stage_loss` uses them by default.

`router_stage_loss` takes a batch exactly like `coral_hf.training.objective.coral_loss` (tokens, target features,
loss mask), so a training loop switches stages by switching the loss function:

```python
params = freeze_for_router_stage(drafter)
optimizer = torch.optim.AdamW(params, lr=1e-3)
loss, metrics = router_stage_loss(drafter, input_ids, features, loss_mask, attention_mask, unroll_steps=3)
```

`router_loss` is the underlying loss on features that are already computed (e.g. cached).
"""

from __future__ import annotations

import torch
from torch import nn

from ..lm_head import GroupedLMHead
from ..modeling_coral import CoralDrafter
from .unroll import unrolled_forward


def _grouped_head(drafter: CoralDrafter) -> GroupedLMHead:
    if drafter.grouped_head is None:
        raise ValueError(
            "The router stage trains the router of a grouped head, and this drafter has none: call "
            "`drafter.init_grouped_head(strategy=..., token_counts=...)` first."
        )
    return drafter.grouped_head


def freeze_for_router_stage(drafter: CoralDrafter) -> list[nn.Parameter]:
    """Freeze everything but the router; returns the router's parameters (what the optimizer should update).

    Raises:
        ValueError: the drafter has no grouped head (build one with `drafter.init_grouped_head(...)` first).
    """
    router = _grouped_head(drafter).router
    drafter.requires_grad_(False)
    router.requires_grad_(True)
    return list(router.parameters())


def router_loss(
    drafter: CoralDrafter,
    predicted_features: torch.Tensor,
    target_token_ids: torch.LongTensor,
    mask: torch.Tensor,
    target_group_mass: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Cross-entropy of the router against the group of the target's next token, and its coverage.

    Args:
        drafter: a drafter with a grouped head (its router is what learns).
        predicted_features: `[..., hidden]` the drafter's predicted features (detached: the drafter is frozen). With
            multi-step unrolling, pass the outputs of every depth: the router reads all of them while drafting.
        target_token_ids: `[...]` the target's top-1 token at each position (the label's group is looked up).
        mask: `[...]` 1 where the position counts (assistant tokens).
        target_group_mass: `[..., num_groups]` optional target probability mass per group
            (`drafter.grouped_head.group_mass(q)`); when given, it is the label (soft cross-entropy) instead of the
            top-1 token's group. Coverage always uses the top-1 token.

    Returns:
        The mean loss over masked positions, and float metrics: `router_coverage` (the top-1 token's group is among
        the router's top `config.active_groups`), `router_acc` (it is the router's first choice) and
        `router_positions`.
    """
    head = _grouped_head(drafter)
    selected = mask.bool()
    router = head.router
    scores = router(predicted_features[selected].to(router.w2.weight.dtype)).float()
    labels = head.group_of_token().to(scores.device)[target_token_ids[selected]]
    log_probs = scores.log_softmax(dim=-1)
    if target_group_mass is not None:
        soft_labels = target_group_mass[selected].to(log_probs)
        per_position = -(soft_labels * log_probs).sum(dim=-1)
    else:
        per_position = -log_probs.gather(-1, labels[:, None]).squeeze(-1)
    num_positions = labels.numel()
    if num_positions == 0:
        return scores.sum() * 0.0, {"router_coverage": 0.0, "router_acc": 0.0, "router_positions": 0.0}
    with torch.no_grad():
        active = scores.topk(drafter.config.active_groups, dim=-1).indices
        coverage = (active == labels[:, None]).any(dim=-1).float().mean().item()
        accuracy = (active[:, 0] == labels).float().mean().item()
    metrics = {"router_coverage": coverage, "router_acc": accuracy, "router_positions": float(num_positions)}
    return per_position.mean(), metrics


def router_stage_loss(
    drafter: CoralDrafter,
    input_ids: torch.LongTensor,
    features: torch.Tensor,
    loss_mask: torch.Tensor,
    attention_mask: torch.Tensor | None = None,
    unroll_steps: int = 1,
    soft_labels: bool = True,
    fused_features: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The router stage's loss of one batch: the frozen drafter predicts, the router learns to cover the target.

    Positions and alignment are those of `coral_loss`: the drafter's output at p (any depth) predicts f_{p+1}, and
    the router must cover the target's top-1 token under f_{p+1} (token t_{p+2}) where t_{p+2} is an assistant token.
    The drafter runs `unroll_steps` unrolled depths without gradients, and the outputs of every depth train the
    router, which reads predictions of all depths while drafting.

    Args:
        drafter: a drafter with a grouped head, frozen with `freeze_for_router_stage`.
        input_ids: `[batch, T]` tokens.
        features: `[batch, T, hidden]` target features for `input_ids`.
        loss_mask: `[batch, T]`, 1 where the token is a training label.
        attention_mask: `[batch, T]` padding mask (1 = real token), or None.
        unroll_steps: drafting depths to train the router on (1 = the drafter's single-step predictions).
        soft_labels: use the target's mass per group as the label (default) instead of its top-1 token's group.
        fused_features: the fused target layers' outputs, for drafters that fuse them (see `coral_loss`).

    Returns:
        The loss and float metrics: `router_coverage`, `router_acc` and `positions` (labelled positions per depth).
    """
    with torch.no_grad():
        step_outputs = unrolled_forward(drafter, input_ids, features, unroll_steps, fused_features=fused_features)
        label_mask = loss_mask[:, 2:].bool()
        if attention_mask is not None:
            label_mask &= attention_mask[:, 2:].bool()
        teacher_logits = drafter.compute_logits(features[:, 1:-1][label_mask], head_mode="full")
        top1 = teacher_logits.argmax(dim=-1)
        group_mass = _grouped_head(drafter).group_mass(teacher_logits.softmax(dim=-1)) if soft_labels else None
        predicted = torch.cat([output[:, :-1][label_mask] for output in step_outputs])
    repeats = len(step_outputs)
    loss, metrics = router_loss(
        drafter,
        predicted,
        top1.repeat(repeats),
        torch.ones(predicted.shape[0], device=predicted.device),
        target_group_mass=None if group_mass is None else group_mass.repeat(repeats, 1),
    )
    del metrics["router_positions"]
    return loss, {**metrics, "positions": float(top1.shape[0])}


__all__ = ["freeze_for_router_stage", "router_loss", "router_stage_loss"]
