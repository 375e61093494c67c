"""The router training stage of CORAL's lighter drafter: the drafter is frozen, only the group router learns.

The router reads the drafter's predicted feature `h` (the same tensor it reads while drafting) and must rank first
the vocabulary group that holds the token the target will produce. Its label is therefore the group of the target's
top-1 token at that position (`argmax` of the target distribution q, which is also what greedy verification
accepts). Passing `target_group_mass` switches to a soft label, the probability mass of q in each group
(`drafter.grouped_head.group_mass(q)`): it also teaches the order of the runner-up groups, which matters because
k > 1 groups are active, and it is what bounds acceptance under sampling.

Coverage, the fraction of positions whose target top-1 token lies in the router's top-k groups, bounds the
drafter's greedy acceptance in router mode: a draft can only be accepted where it is covered.

Usage with any training loop (the Trainer integration calls the same two functions):

```python
params = freeze_for_router_stage(drafter)
optimizer = torch.optim.AdamW(params, lr=1e-3)
with torch.no_grad():
    predicted = drafter(input_ids=ids[:, 1:], hidden_states=features[:, :-1]).last_hidden_state
    target_top1 = drafter.compute_logits(features[:, 1:], head_mode="full").argmax(-1)
loss, metrics = router_loss(drafter, predicted, target_top1, loss_mask[:, 2:])
```
"""

from __future__ import annotations

import torch
from torch import nn

from ..modeling_coral import CoralDrafter


def freeze_for_router_stage(drafter: CoralDrafter) -> list[nn.Parameter]:
    """Freeze everything but the router; returns the router's parameters (what the optimizer should update).

    Raises:
        ValueError: the drafter has no grouped head (build one with `drafter.init_grouped_head(...)` first).
    """
    if drafter.grouped_head is None:
        raise ValueError(
            "The router stage trains the router of a grouped head, and this drafter has none: call "
            "`drafter.init_grouped_head(strategy=..., token_counts=...)` first."
        )
    drafter.requires_grad_(False)
    router = drafter.grouped_head.router
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
    head = drafter.grouped_head
    if head is None:
        raise ValueError("router_loss needs a drafter with a grouped head (`drafter.init_grouped_head(...)`).")
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


__all__ = ["freeze_for_router_stage", "router_loss"]
