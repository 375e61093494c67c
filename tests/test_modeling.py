"""CoralDrafter as a transformers model: config, save/load, Auto classes, target checks."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel

from coral_hf import CoralConfig, CoralDrafter, CoralTargetMismatchError, load_drafter
from coral_hf.hub import UnsafeCheckpointError

from .testing_utils import make_tiny_target


def test_config_records_target_and_generation_defaults():
    target = make_tiny_target("qwen2")
    drafter = CoralDrafter.from_target(target, draft_length=4, draft_confidence_threshold=0.3)
    config = drafter.config
    assert (config.target_model_type, config.target_vocab_size, config.target_hidden_size) == ("qwen2", 96, 48)
    assert config.target_fingerprint["sha256"]
    assert drafter.generation_config.num_assistant_tokens == 4
    assert drafter.generation_config.assistant_confidence_threshold == 0.3
    assert drafter.generation_config.num_assistant_tokens_schedule == "constant"
    # The decoder layer comes from the target family, with EAGLE's layer-0 input norm dropped.
    assert type(drafter.layers[0]).__name__ == "Qwen2DecoderLayer"
    assert isinstance(drafter.layers[0].input_layernorm, torch.nn.Identity)
    assert drafter.layers[0].self_attn.q_proj.bias is not None  # Qwen2 attention keeps its biases


def test_save_writes_only_drafter_weights_and_round_trips(tmp_path):
    target = make_tiny_target("llama")
    drafter = CoralDrafter.from_target(target)
    drafter.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.json", "generation_config.json", "model.safetensors"]
    weights = load_file(tmp_path / "model.safetensors")
    drafter_parts = ("fc.", "layers.", "token_norm.", "feature_norm.", "norm.")
    assert all(key.startswith(drafter_parts) for key in weights), sorted(weights)
    assert not any("embed" in key or "lm_head" in key for key in weights)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "coral_drafter"

    loaded = CoralDrafter.from_pretrained(tmp_path, target=target)
    assert loaded.target is target
    ids = torch.randint(1, 96, (1, 7))
    features = torch.randn(1, 7, 48)
    with torch.no_grad():
        expected = drafter(input_ids=ids, hidden_states=features, output_logits=True).logits
        actual = loaded(input_ids=ids, hidden_states=features, output_logits=True).logits
    torch.testing.assert_close(actual, expected)
    assert loaded.generation_config.num_assistant_tokens == drafter.generation_config.num_assistant_tokens


def test_added_layers_start_as_the_identity_and_then_learn(tmp_path):
    target = make_tiny_target("llama")
    drafter = CoralDrafter.from_target(target)
    ids, features = torch.randint(1, 96, (1, 7)), torch.randn(1, 7, 48)
    with torch.no_grad():
        before = drafter(input_ids=ids, hidden_states=features, output_logits=True).logits
    drafter.add_draft_layers(3)
    assert len(drafter.layers) == drafter.config.num_draft_layers == 3
    assert [layer.self_attn.layer_idx for layer in drafter.layers] == [0, 1, 2]  # each its own KV-cache slot
    assert not isinstance(drafter.layers[1].input_layernorm, torch.nn.Identity)  # only layer 0 drops it (EAGLE)
    output = drafter(input_ids=ids, hidden_states=features, output_logits=True)
    torch.testing.assert_close(output.logits, before)  # the same drafter, with room to grow
    output.logits.logsumexp(-1).sum().backward()
    assert drafter.layers[2].mlp.down_proj.weight.grad.abs().sum() > 0  # and the new layers are trained

    drafter.save_pretrained(tmp_path)
    loaded = CoralDrafter.from_pretrained(tmp_path, target=target)
    with torch.no_grad():
        torch.testing.assert_close(loaded(input_ids=ids, hidden_states=features, output_logits=True).logits, before)
    with pytest.raises(ValueError, match="Cannot shrink a drafter of 3 layers to 2"):
        loaded.add_draft_layers(2)


def test_fused_feature_layers_start_unused_and_then_learn(tmp_path):
    target = make_tiny_target("llama")
    drafter = CoralDrafter.from_target(target)
    ids, features, fused = torch.randint(1, 96, (1, 7)), torch.randn(1, 7, 48), torch.randn(1, 7, 2, 48)
    with torch.no_grad():
        before = drafter(input_ids=ids, hidden_states=features, output_logits=True).logits
    with pytest.raises(ValueError, match="target has 2 decoder layers"):
        drafter.add_fused_feature_layers([1, 2])
    assert drafter.config.fused_feature_layers is None and drafter.fused_fc is None  # a refusal changes nothing
    drafter.add_fused_feature_layers([1, 0])
    output = drafter(input_ids=ids, hidden_states=features, fused_hidden_states=fused, output_logits=True)
    torch.testing.assert_close(output.logits, before)  # the same drafter until trained
    output.logits.logsumexp(-1).sum().backward()
    assert drafter.fused_fc.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"fused_hidden_states must be \(1, 7, 2, 48\)"):
        drafter(input_ids=ids, hidden_states=features, fused_hidden_states=fused[:, :, :1])
    with pytest.raises(ValueError, match="already fuses target layers"):
        drafter.add_fused_feature_layers([0])

    with torch.no_grad():
        drafter.fused_fc.weight.normal_()
        expected = drafter(input_ids=ids, hidden_states=features, fused_hidden_states=fused, output_logits=True)
    drafter.save_pretrained(tmp_path)
    loaded = CoralDrafter.from_pretrained(tmp_path, target=target)
    assert loaded.config.fused_feature_layers == [1, 0]
    with torch.no_grad():
        actual = loaded(input_ids=ids, hidden_states=features, fused_hidden_states=fused, output_logits=True)
    torch.testing.assert_close(actual.logits, expected.logits)
    with pytest.raises(ValueError, match="fuses no target layers"):
        CoralDrafter.from_target(target)(input_ids=ids, hidden_states=features, fused_hidden_states=fused)
    with pytest.raises(CoralTargetMismatchError, match="fused_feature_layers"):
        CoralDrafter.from_pretrained(tmp_path, target=make_tiny_target("llama", num_hidden_layers=1))


def test_auto_classes_load_an_unattached_drafter(tmp_path):
    target = make_tiny_target("mistral")
    CoralDrafter.from_target(target).save_pretrained(tmp_path)
    assert isinstance(AutoConfig.from_pretrained(tmp_path), CoralConfig)
    model = AutoModel.from_pretrained(tmp_path)
    assert isinstance(model, CoralDrafter) and model.target is None
    model.attach(target)
    assert model.target is target


def test_state_dict_and_to_never_touch_the_target():
    target = make_tiny_target("llama")
    drafter = CoralDrafter.from_target(target)
    assert not any(key.startswith(("model.", "lm_head")) for key in drafter.state_dict())
    drafter.to(torch.float64)
    assert target.lm_head.weight.dtype == torch.float32


def test_mismatched_shapes_are_refused_with_what_differs(tmp_path):
    CoralDrafter.from_target(make_tiny_target("llama")).save_pretrained(tmp_path)
    other = make_tiny_target("llama", vocab_size=128)
    with pytest.raises(CoralTargetMismatchError, match="vocab_size: drafter expects 96, target has 128"):
        load_drafter(str(tmp_path), target=other)
    with pytest.raises(CoralTargetMismatchError, match="model_type: drafter expects 'llama', target has 'qwen2'"):
        CoralDrafter.from_pretrained(tmp_path, target=make_tiny_target("qwen2"))


def test_same_shapes_other_weights_are_caught_by_the_fingerprint(tmp_path):
    CoralDrafter.from_target(make_tiny_target("llama", seed=0)).save_pretrained(tmp_path)
    with pytest.raises(CoralTargetMismatchError, match="same shapes, different model"):
        CoralDrafter.from_pretrained(tmp_path, target=make_tiny_target("llama", seed=1))


def test_fingerprint_tolerates_the_same_target_in_lower_precision(tmp_path):
    target = make_tiny_target("llama")
    CoralDrafter.from_target(target).save_pretrained(tmp_path)
    half = make_tiny_target("llama").to(torch.bfloat16)
    drafter = CoralDrafter.from_pretrained(tmp_path, target=half)
    assert drafter.dtype == torch.bfloat16 and drafter.target is half


def test_pickle_checkpoints_are_not_loaded(tmp_path):
    drafter = CoralDrafter.from_target(make_tiny_target("llama"))
    drafter.save_pretrained(tmp_path)
    (tmp_path / "model.safetensors").unlink()
    torch.save(drafter.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(UnsafeCheckpointError, match="pickle checkpoint"):
        CoralDrafter.from_pretrained(tmp_path)


def test_truncated_weights_file_gives_a_clear_error(tmp_path):
    CoralDrafter.from_target(make_tiny_target("llama")).save_pretrained(tmp_path)
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(Exception, match="(?i)safetensors|incomplete|invalid|deserializ"):
        CoralDrafter.from_pretrained(tmp_path)


def test_wrong_feature_shape_is_refused():
    drafter = CoralDrafter.from_target(make_tiny_target("llama"))
    with pytest.raises(ValueError, match=r"hidden_states must be \[batch, seq, 48\]"):
        drafter(input_ids=torch.ones(1, 4, dtype=torch.long), hidden_states=torch.randn(1, 4, 47))
    with pytest.raises(ValueError, match="matching input_ids"):
        drafter(input_ids=torch.ones(1, 5, dtype=torch.long), hidden_states=torch.randn(1, 4, 48))
