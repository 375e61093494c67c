"""Configuration of a CORAL drafter: its geometry, the target it belongs to, and its drafting defaults."""

from __future__ import annotations

from typing import Any

from transformers import AutoConfig, PreTrainedConfig

# Fields of the target's config that describe one decoder layer; the drafter's layer is rebuilt from them.
_LAYER_FIELDS = (
    "model_type",
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "hidden_act",
    "max_position_embeddings",
    "rms_norm_eps",
    "rope_parameters",
    "attention_bias",
    "attention_dropout",
    "mlp_bias",
    "sliding_window",
    "use_sliding_window",
    "pad_token_id",
    "bos_token_id",
    "eos_token_id",
)


class CoralConfig(PreTrainedConfig):
    r"""
    Configuration of a [`CoralDrafter`]: an EAGLE-style feature-level drafter trained with CORAL.

    The drafter is built from its target: the decoder layer copies the target family's layer geometry, and the
    embedding and LM head are the target's own (not stored). The `target_*` fields record which target the drafter
    belongs to, so that attaching it to another model fails loudly instead of drafting garbage.

    Args:
        target_config (`dict`, *optional*):
            The target's text config (layer-relevant fields), used to build the drafter's decoder layer(s) with the
            target family's own transformers classes.
        num_draft_layers (`int`, defaults to 1):
            Number of decoder layers in the drafter.
        fc_bias (`bool`, defaults to `False`):
            Whether the input projection `fc: [embed(t_{p+1}); f_p] -> H` has a bias (EAGLE-1 used one; modern
            targets without biases do not need it).
        layer0_input_norm (`bool`, defaults to `False`):
            Whether the first layer keeps its input RMSNorm. EAGLE drops it: the fused input is already on the scale
            of the target's normalised features.
        draft_length (`int`, defaults to 5):
            Tokens drafted per round; written to the drafter's `generation_config.num_assistant_tokens`, which is
            where transformers' assisted decoding reads it.
        draft_confidence_threshold (`float`, defaults to 0.0):
            Stop drafting early when the drafter's probability of its own token falls below this value (0 disables);
            written to `generation_config.assistant_confidence_threshold`.
        target_name_or_path (`str`, *optional*):
            Hub id or local path of the target (the model card's `base_model`).
        target_revision (`str`, *optional*):
            Revision of the target the drafter was trained against.
        target_model_type (`str`, *optional*), target_vocab_size (`int`, *optional*),
        target_hidden_size (`int`, *optional*):
            Shape of the target; checked on attach.
        target_fingerprint (`dict`, *optional*):
            Summary of the target's embedding / LM-head weights (see `coral_hf.target_utils.target_fingerprint`);
            catches a different target with the same shapes.
        training_recipe (`dict`, *optional*):
            How the drafter was trained (data, steps, losses); rendered into the model card.
        eval_results (`dict`, *optional*):
            Measured acceptance length / speedup; rendered into the model card.
    """

    model_type = "coral_drafter"

    target_config: dict | None = None
    num_draft_layers: int = 1
    fc_bias: bool = False
    layer0_input_norm: bool = False
    draft_length: int = 5
    draft_confidence_threshold: float = 0.0
    target_name_or_path: str | None = None
    target_revision: str | None = None
    target_model_type: str | None = None
    target_vocab_size: int | None = None
    target_hidden_size: int | None = None
    target_fingerprint: dict | None = None
    training_recipe: dict | None = None
    eval_results: dict | None = None

    def __post_init__(self, **kwargs):
        if self.target_config is not None:
            self.target_model_type = self.target_model_type or self.target_config.get("model_type")
            self.target_vocab_size = self.target_vocab_size or self.target_config.get("vocab_size")
            self.target_hidden_size = self.target_hidden_size or self.target_config.get("hidden_size")
        if self.num_draft_layers < 1:
            raise ValueError(f"num_draft_layers must be >= 1, got {self.num_draft_layers}.")
        if self.draft_length < 1:
            raise ValueError(f"draft_length must be >= 1, got {self.draft_length}.")
        super().__post_init__(**kwargs)

    @property
    def hidden_size(self) -> int:
        return self.target_hidden_size

    @property
    def vocab_size(self) -> int:
        return self.target_vocab_size

    @classmethod
    def from_target_config(cls, target_config: PreTrainedConfig, **kwargs: Any) -> CoralConfig:
        """Derive a drafter config from the target's config (text part for multimodal targets)."""
        text_config = target_config.get_text_config().to_dict()
        layer_fields = {key: text_config[key] for key in _LAYER_FIELDS if key in text_config}
        kwargs.setdefault("target_name_or_path", getattr(target_config, "_name_or_path", None) or None)
        return cls(target_config=layer_fields, **kwargs)

    def layer_config(self) -> PreTrainedConfig:
        """The target-family config that the drafter's decoder layers are built from."""
        if self.target_config is None:
            raise ValueError(
                "This CoralConfig has no `target_config`; build it with `CoralConfig.from_target_config`."
            )
        fields = dict(self.target_config)
        model_type = fields.pop("model_type")
        layer_config = AutoConfig.for_model(model_type, num_hidden_layers=self.num_draft_layers, **fields)
        layer_config._attn_implementation = self._attn_implementation
        return layer_config


__all__ = ["CoralConfig"]
