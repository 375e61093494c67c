"""The low-precision tie rule: the dtype bound and the target's own computation shapes."""

from __future__ import annotations

import pytest
import torch

from coral_hf.eval.ties import is_numerical_tie, logit_resolution, pair_gaps_by_shape

from .testing_utils import make_tiny_target


def test_tie_classification_by_dtype_resolution():
    assert logit_resolution(20.0, torch.bfloat16) == 0.125  # bf16 spacing in [16, 32)
    assert is_numerical_tie(20.0, 20.0, torch.bfloat16)  # exact tie
    assert is_numerical_tie(20.125, 20.0, torch.bfloat16)  # one unit apart: rounding can flip it
    assert not is_numerical_tie(21.0, 20.0, torch.bfloat16)  # eight units apart: a real divergence
    assert not is_numerical_tie(20.0, 20.0, torch.float32)  # fp32 is strict: never a tie
    assert not is_numerical_tie(2.0, 1.9, torch.bfloat16)  # 0.1 is > 2 units (0.0156 each) at magnitude 2


@pytest.mark.parametrize("generated_length", [0, 1, 5])
def test_pair_gaps_by_shape_evaluate_the_same_prediction(generated_length):
    target = make_tiny_target("llama", seed=3)
    input_ids = torch.tensor([[5, 6, 7, 8]])
    out = target.generate(
        input_ids, max_new_tokens=generated_length + 1, do_sample=False, output_scores=True,
        return_dict_in_generate=True,
    )  # fmt: skip
    generated = out.sequences[0, 4:].tolist()
    row = out.scores[-1][0]  # the 1-token step that chose the last token
    plain_token, other_token = generated[-1], int(row.topk(2).indices[1])
    gaps = pair_gaps_by_shape(target, input_ids, generated[:-1], plain_token, other_token, chunk_sizes=(2, 3, 4))
    assert set(gaps) == (
        {"full forward"} if generated_length == 0 else {"full forward", "chunks of 2", "chunks of 3", "chunks of 4"}
    )
    for value in gaps.values():  # float32: every shape computes the plain call's logits
        assert value == pytest.approx(float(row[plain_token] - row[other_token]), abs=1e-4)
