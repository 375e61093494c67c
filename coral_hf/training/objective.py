"""The CORAL training objective: per-step feature + distribution losses over unrolled steps, plus CSRA."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..modeling_coral import CoralDrafter
from .losses import csra_loss, feature_regression_loss, soft_cross_entropy, topk_distillation_loss
from .unroll import unrolled_forward


@dataclass
class CoralLossConfig:
    """Weights and options of the CORAL objective (DESIGN.md 1.2-1.3).

    Args:
        unroll_steps: multi-step (HASS) depth n; 1 is EAGLE-style single-step training.
        feature_weight: weight of the SmoothL1 feature regression.
        ce_weight: weight of the soft cross-entropy against the target's next-token distribution.
        topk_weight: weight of HASS's top-K distillation (0 disables it).
        topk: K of the top-K distillation.
        csra_weight: lambda, weight of CORAL's Cross-Step Representation Alignment (needs unroll_steps >= 2).
        csra_temperature: InfoNCE temperature tau_c of CSRA.
        csra_pairing: `"all"` step pairs or `"anchor"` (step 1 against each later step).
        csra_stop_grad: detach the positive/key side of each CSRA pair.
        csra_max_positions: subsample at most this many positions for CSRA's N x N similarities (None: all).
        feature_noise: amplitude of uniform noise added to the real input features (EAGLE uses 0.2 at GPU scale).
        logit_vocab: `"full"`: the vocabulary-sized terms use the whole LM head; `"shortlist"`: they use the
            drafter's shortlist only (a draft vocabulary, as in EAGLE-3 / FR-Spec), against the target's
            distribution renormalised over it. Accuracy still counts a miss when the target's top-1 lies outside.
            Pair it with `head_mode="shortlist"` at inference: the other rows are never trained.
        logit_positions: at most this many loss positions per batch (the same random ones for every step) get the
            vocabulary-sized terms (soft CE, top-K, accuracy); the feature loss always uses all positions. The LM
            head dominates training cost on CPU; None uses every position.
    """

    unroll_steps: int = 3
    feature_weight: float = 1.0
    ce_weight: float = 0.1
    topk_weight: float = 0.0
    topk: int = 10
    csra_weight: float = 0.0
    csra_temperature: float = 0.1
    csra_pairing: str = "all"
    csra_stop_grad: bool = False
    csra_max_positions: int | None = 512
    feature_noise: float = 0.0
    logit_vocab: str = "full"
    logit_positions: int | None = None

    def __post_init__(self):
        if self.logit_vocab not in ("full", "shortlist"):
            raise ValueError(f"logit_vocab must be 'full' or 'shortlist', got {self.logit_vocab!r}.")


def coral_loss(
    drafter: CoralDrafter,
    input_ids: torch.LongTensor,
    features: torch.Tensor,
    loss_mask: torch.Tensor,
    attention_mask: torch.Tensor | None,
    config: CoralLossConfig,
    generator: torch.Generator | None = None,
    fused_features: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Loss of one batch and its metrics.

    The drafter's output at position p (any depth) predicts feature f_{p+1} and token t_{p+2}; it is trained where
    t_{p+2} is an assistant token (`loss_mask`). Each unrolled step weighs equally:
    `feature_weight * SmoothL1 + ce_weight * softCE(q) [+ topk_weight * topK]`, q being the target's own
    distribution at f_{p+1}; CSRA aligns the steps' outputs at the same positions.

    Args:
        drafter: the drafter being trained.
        input_ids: `[batch, T]` tokens.
        features: `[batch, T, hidden]` target features for `input_ids`.
        loss_mask: `[batch, T]`, 1 where the token is a training label.
        attention_mask: `[batch, T]` padding mask (1 = real token), or None.
        config: loss weights and options.
        generator: random generator for feature noise and CSRA subsampling.
        fused_features: `[batch, T, num_fused, hidden]` outputs of the drafter's `fused_feature_layers` (drafters
            that fuse target layers; see `compute_fused_target_features`).

    Returns:
        The scalar loss and float metrics: `loss_step_{s}` and `acc_step_{s}` (top-1 agreement with the target at
        draft depth s), `feature_loss`, `ce_loss`, `csra` and `positions`.
    """
    step_outputs = unrolled_forward(
        drafter,
        input_ids,
        features,
        config.unroll_steps,
        feature_noise=config.feature_noise,
        generator=generator,
        fused_features=fused_features,
    )
    label_mask = loss_mask[:, 2:].bool()
    if attention_mask is not None:
        label_mask &= attention_mask[:, 2:].bool()
    target_features = features[:, 1:-1][label_mask].to(step_outputs[0].dtype)
    num_positions = target_features.shape[0]
    logit_subset = None
    if config.logit_positions is not None and num_positions > config.logit_positions:
        device = generator.device if generator is not None else target_features.device
        logit_subset = torch.randperm(num_positions, generator=generator, device=device)[: config.logit_positions]
        logit_subset = logit_subset.to(target_features.device)
    shortlist = None
    if config.logit_vocab == "shortlist":
        _, shortlist = drafter.compute_shortlist_logits(target_features[:0])

    def student_logits(predicted: torch.Tensor) -> torch.Tensor:
        if shortlist is None:
            return drafter.compute_logits(predicted, head_mode="full")
        return drafter.compute_shortlist_logits(predicted)[0]

    with torch.no_grad():
        logit_features = target_features if logit_subset is None else target_features[logit_subset]
        teacher_logits = drafter.compute_logits(logit_features, head_mode="full")
        teacher_top1 = teacher_logits.argmax(dim=-1)
        if shortlist is not None:
            teacher_logits = teacher_logits[:, shortlist.to(teacher_logits.device)]
        teacher_probs = teacher_logits.softmax(dim=-1)

    total = torch.zeros((), device=target_features.device)
    metrics: dict[str, float] = {"positions": float(num_positions)}
    feature_sum = ce_sum = 0.0
    masked_outputs = []
    for step, output in enumerate(step_outputs, start=1):
        predicted = output[:, :-1][label_mask]
        masked_outputs.append(predicted)
        logits = student_logits(predicted if logit_subset is None else predicted[logit_subset])
        feature_loss = feature_regression_loss(predicted, target_features, None)
        ce_loss = soft_cross_entropy(logits, teacher_probs, None)
        step_loss = config.feature_weight * feature_loss + config.ce_weight * ce_loss
        if config.topk_weight > 0:
            step_loss = step_loss + config.topk_weight * topk_distillation_loss(
                logits, teacher_logits, None, k=config.topk
            )
        total = total + step_loss
        feature_sum += feature_loss.item()
        ce_sum += ce_loss.item()
        metrics[f"loss_step_{step}"] = step_loss.item()
        drafted = logits.argmax(dim=-1) if shortlist is None else shortlist.to(logits.device)[logits.argmax(dim=-1)]
        metrics[f"acc_step_{step}"] = (drafted == teacher_top1).float().mean().nan_to_num(0.0).item()
    metrics["feature_loss"] = feature_sum / len(step_outputs)
    metrics["ce_loss"] = ce_sum / len(step_outputs)
    if config.csra_weight > 0 and len(step_outputs) > 1:
        csra = csra_loss(
            masked_outputs,
            temperature=config.csra_temperature,
            pairing=config.csra_pairing,
            stop_grad_positive=config.csra_stop_grad,
            max_positions=config.csra_max_positions,
            generator=generator,
        )
        total = total + config.csra_weight * csra
        metrics["csra"] = csra.item()
    return total, metrics
