"""Multi-step (HASS-style) unrolled drafter forward: training sees what the drafter sees at draft depth s."""

from __future__ import annotations

import torch
from transformers.cache_utils import DynamicCache

from ..modeling_coral import CoralDrafter


def multi_step_attention_mask(length: int, step: int, device: torch.device | None = None) -> torch.Tensor:
    """Boolean `[1, 1, length, step * length]` mask for the queries of unrolled step `step` (1-based).

    Keys are the `step` blocks of `length` positions computed so far, block k holding step k's inputs. At draft
    depth s, the drafter's prediction at position p rests on real target features up to p - s + 1 and on its own
    predictions after that, one per depth: so query p of step s sees block 1 up to position p - s + 1, and from
    each later block k exactly position p - (s - k). Step 1 is the ordinary causal mask.
    """
    queries = torch.arange(length, device=device)[:, None]
    keys = torch.arange(length, device=device)[None, :]
    blocks = [keys <= queries - (step - 1)]
    blocks += [keys == queries - (step - k) for k in range(2, step + 1)]
    return torch.cat(blocks, dim=1)[None, None]


def unrolled_forward(
    drafter: CoralDrafter,
    input_ids: torch.LongTensor,
    features: torch.Tensor,
    num_steps: int,
    feature_noise: float = 0.0,
    generator: torch.Generator | None = None,
    fused_features: torch.Tensor | None = None,
) -> list[torch.Tensor]:
    """Run the drafter for `num_steps` unrolled steps over whole sequences.

    Args:
        drafter: the drafter being trained (attached to its target).
        input_ids: `[batch, T]` tokens t_0..t_{T-1} (right-padded).
        features: `[batch, T, hidden]` target features f_0..f_{T-1} (post-norm last hidden states).
        num_steps: unrolled depth n (1 = EAGLE single-step training).
        feature_noise: amplitude a of uniform U(-a, a) noise added to the real input features (EAGLE).
        generator: random generator for the noise.
        fused_features: `[batch, T, num_fused, hidden]` outputs of the drafter's `fused_feature_layers`, for
            drafters that fuse them: they join the real features (step 1), as in generation, where the positions
            drafted ahead have none.

    Returns:
        `num_steps` tensors `[batch, T - 1, hidden]`; entry s - 1 at position p is the drafter's prediction of
        f_{p+1} (and through the LM head, of token t_{p+2}) at draft depth s: real features up to p - s + 1, its own
        (detached) predictions of the previous depths after that.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}.")
    tokens = input_ids[:, 1:]
    real = features[:, :-1]
    if feature_noise > 0:
        noise = torch.rand(real.shape, generator=generator, device=real.device, dtype=real.dtype)
        real = real + (2 * noise - 1) * feature_noise
    batch_size, length = tokens.shape
    positions = torch.arange(length, device=tokens.device).unsqueeze(0).expand(batch_size, -1)
    cache = DynamicCache()
    step_inputs = real
    outputs = []
    for step in range(1, num_steps + 1):
        output = drafter(
            input_ids=tokens,
            hidden_states=step_inputs,
            attention_mask=multi_step_attention_mask(length, step, device=tokens.device),
            position_ids=positions,
            past_key_values=cache,
            use_cache=step < num_steps,
            fused_hidden_states=fused_features[:, :-1] if fused_features is not None and step == 1 else None,
        ).last_hidden_state
        outputs.append(output)
        # Next depth: position q takes the prediction of f_q made at q - 1; position 0 has none and stays real.
        step_inputs = torch.cat([real[:, :1], output[:, :-1].detach()], dim=1)
    return outputs
