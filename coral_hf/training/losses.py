"""Loss functions for CORAL drafter training: small pure functions on tensors.

Per-position losses are averaged over loss-masked positions only (`mask` of 0/1, same leading shape as the
inputs, e.g. [B, T]). Positions are selected before any vocabulary-sized work, so padding and prompt tokens cost
nothing and cannot leak NaN/inf into the result; an all-zero mask gives a zero loss that still backpropagates.
Computations run in float32 whatever the input dtype (bf16 training).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def _select(values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """The masked positions of `values` as float32 `[N, ...]`; `mask=None` means every position is kept already.

    Skipping the boolean index when positions were selected upstream avoids copying `[N, vocab]` logits (and the
    scatter in its backward), which dominated the loss time of CPU training.
    """
    values = values if mask is None else values[mask.bool()]
    return values.float()


def _masked_mean(values: torch.Tensor) -> torch.Tensor:
    """Mean of per-position values [N]; 0 (still attached to the graph) when N == 0."""
    return values.sum() / max(values.numel(), 1)


def feature_regression_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """SmoothL1 (beta = 1) between predicted and target features, the EAGLE/HASS feature-level loss.

    Args:
        pred: drafter output features [B, T, H].
        target: the target's features at the same positions [B, T, H] (computed without grad).
        mask: [B, T] 0/1, positions that count; None when `pred` and `target` hold those positions only ([N, H]).

    Returns:
        The loss averaged over the hidden dimension, then over masked positions.
    """
    per_position = F.smooth_l1_loss(_select(pred, mask), _select(target, mask), reduction="none", beta=1.0).mean(-1)
    return _masked_mean(per_position)


class _SoftCrossEntropy(torch.autograd.Function):
    """Per-row `logsumexp(s) - q . s` with the closed-form gradient `(softmax(s) - q) * g` (rows of q sum to 1).

    Equal to `-(q * log_softmax(s)).sum(-1)`, without keeping `[N, vocab]` intermediates for autograd: on CPU the
    elementwise passes over the vocabulary, not the LM-head matmul, dominated the cost of this loss.
    """

    @staticmethod
    def forward(ctx, logits: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        logits32 = logits.float()
        log_normaliser = torch.logsumexp(logits32, dim=-1)
        ctx.save_for_backward(logits, probs, log_normaliser)
        return log_normaliser - (probs * logits32).sum(-1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        logits, probs, log_normaliser = ctx.saved_tensors
        grad_logits = (logits.float() - log_normaliser[:, None]).exp_().sub_(probs).mul_(grad[:, None])
        return grad_logits.to(logits.dtype), None


def soft_cross_entropy(
    student_logits: torch.Tensor, teacher_probs: torch.Tensor, mask: torch.Tensor | None
) -> torch.Tensor:
    """Cross-entropy of the drafter's distribution against the target's: -sum_v q_v log softmax(student)_v.

    Args:
        student_logits: drafter logits [B, T, V].
        teacher_probs: target next-token probabilities q [B, T, V] (computed without grad; rows sum to 1).
        mask: [B, T] 0/1, positions that count; None when the inputs hold those positions only ([N, V]).

    Returns:
        The masked mean over positions. It equals KL(q || p) plus the target's entropy, so its gradient is the
        KL gradient.
    """
    logits = student_logits if mask is None else student_logits[mask.bool()]
    probs = _select(teacher_probs, mask).detach()
    flat_logits, flat_probs = logits.reshape(-1, logits.shape[-1]), probs.reshape(-1, probs.shape[-1])
    return _masked_mean(_SoftCrossEntropy.apply(flat_logits, flat_probs))


def topk_distillation_loss(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor | None, k: int = 10
) -> torch.Tensor:
    """Cross-entropy restricted to the target's top-K tokens (HASS's top-K distillation, K = 10).

    Both distributions live on the same K tokens, the target's most likely ones at each position: the target's
    probabilities renormalised over them (softmax of its top-K logits) and the drafter's log-softmax over its
    logits for those K tokens only. The loss thus asks the drafter to rank and weigh the target's candidates the
    way the target does, which is what decides acceptance, and leaves the long tail to the full-vocabulary soft
    cross-entropy term; it is minimal (the entropy of the renormalised target) when the drafter's restricted
    distribution equals it.

    Args:
        student_logits: drafter logits [B, T, V].
        teacher_logits: target logits [B, T, V] (computed without grad).
        mask: [B, T] 0/1, positions that count; None when the inputs hold those positions only ([N, V]).
        k: number of target tokens kept per position (capped at V).

    Returns:
        The masked mean over positions.
    """
    teacher = _select(teacher_logits, mask)
    top_logits, top_ids = teacher.topk(min(k, teacher.shape[-1]), dim=-1)
    teacher_top = F.softmax(top_logits, dim=-1)
    student_top = F.log_softmax(_select(student_logits, mask).gather(-1, top_ids), dim=-1)
    return _masked_mean(-(teacher_top * student_top).sum(-1))


def csra_loss(
    step_outputs: Sequence[torch.Tensor] | torch.Tensor,
    temperature: float = 0.1,
    pairing: str = "all",
    stop_grad_positive: bool = False,
    max_positions: int | None = None,
    generator: torch.Generator | None = None,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """CORAL's Cross-Step Representation Alignment: InfoNCE between the drafter's outputs of the unrolled steps.

    At each position, the outputs of the S training steps predict the same next feature, so they are positive
    pairs; the outputs of one step at the other positions are the negatives. With Z_s the L2-normalised outputs of
    step s, each step pair (s, s') contributes CE(Z_s @ Z_s'^T / temperature, arange(N)), and the loss is the mean
    over pairs.

    Args:
        step_outputs: the S steps' outputs at the loss-masked positions, a list of [N, H] or a tensor [S, N, H];
            with `mask`, each step's output is [B, T, H] and the masked positions are selected here.
        temperature: softmax temperature of the cosine similarities (lower is sharper).
        pairing: `"all"`: every ordered pair s != s'; `"anchor"`: step 0 against each later step, both directions
            (step 0 sees real features only, so it anchors the others).
        stop_grad_positive: detach the key side of each pair (Z_s', positives and negatives alike), so the query
            step is pulled toward the other step without pulling it back through that term.
        max_positions: if set and N is larger, use this many positions, drawn without replacement (the same ones
            for every step), to bound the N x N similarity matrices.
        generator: random generator for that draw (reproducible subsampling).
        mask: optional [B, T] 0/1 mask applied to [B, T, H] step outputs.

    Returns:
        A scalar; zero (attached to the graph) with fewer than 2 steps or 2 positions.
    """
    if pairing not in ("all", "anchor"):
        raise ValueError(f"pairing must be 'all' or 'anchor', got {pairing!r}")
    if temperature <= 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    if max_positions is not None and max_positions < 2:
        raise ValueError(f"max_positions must be at least 2, got {max_positions}")
    if not isinstance(step_outputs, torch.Tensor):
        if len(step_outputs) == 0:
            return torch.zeros(())
        step_outputs = torch.stack(list(step_outputs))
    outputs = step_outputs[:, mask.bool()] if mask is not None else step_outputs  # [S, N, H]

    num_steps, num_positions = outputs.shape[:2]
    if num_steps < 2 or num_positions < 2:
        return outputs[..., :0].sum()
    if max_positions is not None and num_positions > max_positions:
        device = generator.device if generator is not None else outputs.device
        keep = torch.randperm(num_positions, generator=generator, device=device)[:max_positions]
        outputs = outputs[:, keep.to(outputs.device)]
        num_positions = max_positions

    queries = F.normalize(outputs.float(), dim=-1)
    keys = queries.detach() if stop_grad_positive else queries
    if pairing == "all":
        pairs = [(s, t) for s in range(num_steps) for t in range(num_steps) if s != t]
    else:
        pairs = [(0, s) for s in range(1, num_steps)] + [(s, 0) for s in range(1, num_steps)]
    labels = torch.arange(num_positions, device=outputs.device)
    losses = [F.cross_entropy(queries[s] @ keys[t].T / temperature, labels) for s, t in pairs]
    return torch.stack(losses).mean()


def simulated_acceptance_length(per_depth_accuracy: Sequence[float]) -> float:
    """Expected acceptance length tau of a chain draft, from per-depth accuracies.

    `per_depth_accuracy[k]` is the probability that the draft token at depth k+1 is accepted given that all
    earlier ones were (what multi-step evaluation measures when step k+1 runs on the drafter's own earlier
    outputs). tau = 1 + sum_k prod_{i <= k} acc_i: the target's own bonus token plus the expected accepted prefix.
    """
    tau, survival = 1.0, 1.0
    for accuracy in per_depth_accuracy:
        if not 0.0 <= accuracy <= 1.0:
            raise ValueError(f"accuracies must lie in [0, 1], got {accuracy}")
        survival *= accuracy
        tau += survival
    return tau
