"""oneDNN-packed linear weights: the same function as nn.Linear, for inference only, and lossless decoding on top."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
from torch import nn

from coral_hf import CoralDrafter, pack_linear_weights, tree_generate, unpack_linear_weights
from coral_hf.packed_linear import PackedLinear, packable_dtype, packed_linear_available
from coral_hf.targets import native_bf16, resolve_drafter_dtype, resolve_pack_weights

from .testing_utils import FAMILIES, make_tiny_target

pytestmark = pytest.mark.skipif(not packed_linear_available()[0], reason=packed_linear_available()[1])


def _linear_pair(dtype: torch.dtype, bias: bool) -> tuple[nn.Linear, nn.Linear]:
    torch.manual_seed(0)
    packed = nn.Linear(40, 24, bias=bias).to(dtype)
    plain = nn.Linear(40, 24, bias=bias).to(dtype)
    plain.load_state_dict(packed.state_dict())
    assert pack_linear_weights(packed) == 1
    return packed, plain


ONEDNN_BF16 = pytest.mark.skipif(not packable_dtype(torch.bfloat16), reason=packed_linear_available(torch.bfloat16)[1])


@pytest.mark.parametrize("dtype", [torch.float32, pytest.param(torch.bfloat16, marks=ONEDNN_BF16)])
@pytest.mark.parametrize("bias", [True, False])
def test_packed_linear_computes_what_nn_linear_computes(dtype, bias):
    packed, plain = _linear_pair(dtype, bias)
    tolerance = {"atol": 1e-5, "rtol": 1e-5} if dtype == torch.float32 else {"atol": 0, "rtol": 0}
    with torch.no_grad():
        for shape in [(1, 40), (3, 40), (2, 7, 40), (2, 3, 4, 40)]:
            x = torch.randn(*shape, dtype=dtype)
            torch.testing.assert_close(packed(x), plain(x), **tolerance)
        strided = torch.randn(40, 5, dtype=dtype).t()  # a non-contiguous input
        torch.testing.assert_close(packed(strided), plain(strided), **tolerance)


def test_packing_keeps_parameters_state_dict_and_gradients():
    packed, plain = _linear_pair(torch.float32, bias=True)
    weight = packed.weight
    assert isinstance(packed, PackedLinear) and packed.weight is weight
    assert list(packed.state_dict()) == ["weight", "bias"]
    x = torch.randn(3, 40)
    packed(x).sum().backward()  # autograd: the packed path is skipped, gradients are nn.Linear's
    plain(x).sum().backward()
    torch.testing.assert_close(packed.weight.grad, plain.weight.grad)
    assert unpack_linear_weights(packed) == 1
    assert type(packed) is nn.Linear and packed.weight is weight and not hasattr(packed, "_packed_weight")


def test_packed_linear_can_be_copied_and_pickled():
    packed, plain = _linear_pair(torch.float32, bias=True)
    x = torch.randn(3, 40)
    for copied in (copy.deepcopy(packed), pickle.loads(pickle.dumps(packed))):
        assert isinstance(copied, PackedLinear) and copied.weight is not packed.weight
        with torch.no_grad():
            torch.testing.assert_close(copied(x), plain(x))


def test_packed_linear_made_and_run_under_inference_mode():
    with torch.inference_mode():
        packed, plain = _linear_pair(torch.float32, bias=True)
        x = torch.randn(3, 40)
        torch.testing.assert_close(packed(x), plain(x))


def test_a_weight_changed_after_packing_is_used():
    packed, plain = _linear_pair(torch.float32, bias=False)
    x = torch.randn(4, 40)
    with torch.no_grad():
        packed(x)
        packed.weight.mul_(-2.0)  # in place, as an optimizer step or load_state_dict would
        plain.weight.mul_(-2.0)
        torch.testing.assert_close(packed(x), plain(x))
    packed.load_state_dict(nn.Linear(40, 24, bias=False).state_dict())
    with torch.no_grad():
        torch.testing.assert_close(packed(x), nn.functional.linear(x, packed.weight))


def test_packing_a_target_keeps_tied_weights_and_logits():
    target = make_tiny_target("llama", tie_word_embeddings=True)
    ids = torch.randint(1, target.config.vocab_size, (1, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = target(ids).logits
        assert pack_linear_weights(target) == len([m for m in target.modules() if isinstance(m, nn.Linear)])
        after = target(ids).logits
    assert target.get_output_embeddings().weight is target.get_input_embeddings().weight
    torch.testing.assert_close(after, before, atol=1e-5, rtol=1e-5)
    assert pack_linear_weights(target) == len([m for m in target.modules() if isinstance(m, nn.Linear)])  # re-packs


def _assert_greedy_identical(target: nn.Module, drafter: CoralDrafter, seed: int) -> None:
    """Chain and tree decoding with `drafter` give plain greedy output on a repetitive prompt (copies apply)."""
    prompt = torch.randint(1, 40, (1, 6), generator=torch.Generator().manual_seed(seed)).repeat(1, 2)
    plain = target.generate(prompt, max_new_tokens=20, do_sample=False)
    chain = target.generate(prompt, max_new_tokens=20, do_sample=False, assistant_model=drafter)
    tree = target.generate(prompt, max_new_tokens=20, do_sample=False, custom_generate=tree_generate, drafter=drafter)
    assert torch.equal(chain, plain) and torch.equal(tree, plain), f"seed {seed}"


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_stays_identical_with_packed_target_and_drafter(family):
    target = make_tiny_target(family)
    drafter = CoralDrafter.from_target(target, draft_length=4, num_groups=4, shortlist_size=32, head_mode="shortlist")
    pack_linear_weights(target)
    pack_linear_weights(drafter)
    drafter.generation_config.prompt_lookup_num_tokens = 6
    for seed in range(3):
        if seed == 2:
            drafter = copy.deepcopy(drafter).attach(target)  # a copy of a packed drafter decodes the same
        _assert_greedy_identical(target, drafter, seed)


@pytest.mark.parametrize("pack", [False, pytest.param(True, marks=ONEDNN_BF16)])
def test_bfloat16_drafter_on_float32_target_stays_lossless(pack):
    """A drafter may run in bf16 beside an fp32 target (`--drafter-dtype`): its shortlist copy of the target's LM
    head is made in bf16 (half the bytes per draft step), and greedy output stays the fp32 target's, chain and tree."""
    target = make_tiny_target("llama")
    drafter = CoralDrafter.from_target(
        target, dtype=torch.bfloat16, draft_length=4, num_groups=4, shortlist_size=32, head_mode="shortlist"
    )
    if pack:
        pack_linear_weights(target)
        pack_linear_weights(drafter)
    drafter.generation_config.prompt_lookup_num_tokens = 6
    features = torch.randn(2, target.config.hidden_size)
    logits = drafter.compute_logits(features)
    bound = drafter.grouped_head.bind(target.get_output_embeddings())
    assert bound.shortlist_weight.dtype == torch.bfloat16 and (bound.shortlist_packed is not None) == pack
    assert logits.dtype == torch.float32 and torch.isfinite(logits).sum() == 2 * 32
    for seed in range(2):
        _assert_greedy_identical(target, drafter, seed)


def test_drafter_dtype_auto_is_bfloat16_only_beside_a_wider_target_with_native_bf16():
    native, reason = native_bf16("cpu")
    assert resolve_drafter_dtype("auto", torch.float32, "cpu") == (
        (torch.bfloat16, f"auto: {reason}") if native else (torch.float32, f"auto: the target's ({reason})")
    )
    assert resolve_drafter_dtype("auto", torch.bfloat16, "cpu")[0] == torch.bfloat16
    assert resolve_drafter_dtype("target", torch.float32) == (torch.float32, "the target's")
    assert resolve_drafter_dtype("bfloat16", torch.float32) == (torch.bfloat16, "as requested")


def test_pack_weights_option_is_checked():
    assert resolve_pack_weights(False) == (False, "as requested")
    assert resolve_pack_weights("auto", "cpu")[0] is True
    assert resolve_pack_weights("auto", "meta") == (False, "auto: not on CPU")
    with pytest.raises(ValueError, match="pack_weights must be True, False or 'auto'"):
        resolve_pack_weights("yes")


def test_bfloat16_stays_unpacked_where_onednn_has_no_bfloat16(monkeypatch):
    """On CPUs without AVX-512 (e.g. AVX2-only EPYC and Core parts) oneDNN has no bf16 kernels: auto says so and does
    not pack, an explicit request fails with the reason, and packing a model leaves its bf16 layers as they are."""
    monkeypatch.setattr("coral_hf.packed_linear.packable_dtype", lambda dtype: dtype == torch.float32)
    reason = "oneDNN has no bfloat16 kernels on this CPU (they need AVX-512)"
    assert resolve_pack_weights("auto", "cpu", torch.bfloat16) == (False, f"auto: {reason}")
    assert resolve_pack_weights("auto", "cpu", torch.float32)[0] is True
    with pytest.raises(RuntimeError, match="cannot pack linear weights: oneDNN has no bfloat16 kernels"):
        resolve_pack_weights(True, "cpu", torch.bfloat16)
    with pytest.raises(RuntimeError, match="covers float32 and bfloat16, not float16"):
        resolve_pack_weights(True, "cpu", torch.float16)
    model = nn.Sequential(nn.Linear(8, 8), nn.Linear(8, 8).to(torch.bfloat16))
    assert pack_linear_weights(model) == 1
    assert type(model[0]) is PackedLinear and type(model[1]) is nn.Linear


def test_packed_lora_target_repacked_after_merging_its_adapter():
    peft = pytest.importorskip("peft")
    target = make_tiny_target("llama")
    lora = peft.get_peft_model(
        target, peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    ).eval()
    ids = torch.randint(1, target.config.vocab_size, (1, 10), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before = lora(input_ids=ids).logits
        assert pack_linear_weights(lora) > 0
        torch.testing.assert_close(lora(input_ids=ids).logits, before, atol=1e-5, rtol=1e-5)
        lora.merge_adapter()  # writes the base weights through `.data`, which no version counter sees: re-pack
        pack_linear_weights(lora)
        torch.testing.assert_close(lora(input_ids=ids).logits, before, atol=1e-4, rtol=1e-4)
