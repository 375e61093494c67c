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

# How the drafter turns its predicted feature into logits (see `coral_hf.lm_head`).
HEAD_MODES = ("full", "router", "shortlist")
GROUP_STRATEGIES = ("contiguous", "frequency", "cluster")
_DEFAULT_NUM_GROUPS = 64
_DEFAULT_ACTIVE_FRACTION = 8  # k = G / 8: a routed step multiplies 1/8 of the LM head


def fused_layer_indices(layers: list[int]) -> list[int]:
    """`layers` as a list of distinct target-layer indices >= 0 (ValueError otherwise)."""
    indices = [int(layer) for layer in layers]
    if not indices or min(indices) < 0 or len(set(indices)) != len(indices):
        raise ValueError(f"fused_feature_layers must be distinct layer indices >= 0, got {list(layers)}.")
    return indices


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
        fused_feature_layers (`list[int]`, *optional*):
            Target decoder layers (0-based) whose outputs also enter the drafter's input where real target features
            exist (EAGLE-3's low- and mid-level features next to the last layer's): each is RMS-normalised and their
            concatenation projected by `fused_fc` and added to `fc`'s output. Positions drafted ahead, whose feature
            is the drafter's own prediction, have none and use `fc` alone. None: the last layer's feature only.
        fc_bias (`bool`, defaults to `False`):
            Whether the input projection `fc: [embed(t_{p+1}); f_p] -> H` has a bias (EAGLE-1 used one; modern
            targets without biases do not need it).
        layer0_input_norm (`bool`, defaults to `False`):
            Whether the first layer keeps its input RMSNorm. EAGLE drops it: the fused input is already on the scale
            of the target's normalised features.
        input_norm (`bool`, defaults to `True`):
            RMS-normalise the token embedding and the target feature (each with its own learned scale) before `fc`.
            SmolLM2's post-norm features have a norm of ~47 per token while its embeddings are far smaller, so
            without it the token is nearly invisible in `fc([embed; feature])` (EAGLE-3 normalises both too).
            Measured: held-out acc@1 0.246 vs 0.175 after 0.36M training tokens (docs/results.md).
        output_norm (`bool`, defaults to `True`):
            End with an RMSNorm, initialised from the target's final norm by [`CoralDrafter.from_target`]: the
            drafter predicts the target's post-norm feature, which is what the tied LM head reads.
        draft_length (`int`, defaults to 5):
            Tokens drafted per round; written to the drafter's `generation_config.num_assistant_tokens`, which is
            where transformers' assisted decoding reads it.
        draft_confidence_threshold (`float`, defaults to 0.0):
            Stop drafting early when the drafter's probability of its own token falls below this value (0 disables);
            written to `generation_config.assistant_confidence_threshold`.
        prompt_lookup_tokens (`int`, *optional*):
            Hybrid proposals: when set, a chain round copies up to this many tokens (more than the draft length
            allowed: copies cost no drafter work) from the context where its last tokens occurred before (prompt
            lookup) and the copy is the likelier candidate (see `coral_hf.generation.CoralCandidateGenerator`), and
            drafts otherwise; tree decoding adds the copy (up to this many tokens, not capped by the tree depth) as
            one more branch. Written to `generation_config.prompt_lookup_num_tokens`. `None` disables copying.
        prompt_lookup_ngram (`int`, defaults to 8):
            Hybrid proposals: the longest suffix of the context matched for a copy (then shorter ones, down to 1
            token); the copy is the continuation most of that suffix's earlier occurrences agree on. A longer match is
            a more specific context: 8 instead of transformers' prompt-lookup default of 2 raised the shipped
            drafter's tree tau on HumanEval, MT-bench and ShareGPT first turns, at the same width. Written to
            `generation_config.max_matching_ngram_size`.
        copy_confidence (`float`, defaults to 0.0):
            Hybrid proposals: also copy when the drafter's probability of its own top-1 is below this value (0: copy
            only when the copy starts with the drafter's top-1). Written to `generation_config.copy_confidence`.
        copy_only_after (`int`, defaults to 1):
            Hybrid proposals: after this many consecutive rounds whose copy the target accepted in full, a round that
            finds a copy proposes the copy alone and runs no drafter forward; the streak ends at the first copy not
            accepted in full, and the drafter then catches up on every skipped position in one forward. Long
            verbatim spans (extraction, math restating its numbers) then cost what prompt lookup costs.
            Written to `generation_config.copy_only_after`. 0 disables (every round also drafts).
        copy_only_tokens (`int`, *optional*):
            Hybrid proposals: most tokens a copy-only round (see `copy_only_after`) proposes; `None` uses
            `prompt_lookup_tokens`. Inside a streak of accepted copies a longer copy is likely right, and one wider
            verification costs less than two rounds. Written to `generation_config.copy_only_tokens`.
        tree_total_tokens (`int`, defaults to 8):
            Tree decoding ([`coral_hf.tree_generate`]): tokens the target verifies per round, the root included.
            Written to `generation_config.tree_total_tokens`. The defaults (8 / 3 / 2) were the fastest measured
            for the shipped SmolLM2 drafter on a 2-core CPU, in bf16 and fp32 (`scripts/sweep_tree.py`); a drafter
            that accepts more wants a larger tree.
        tree_depth (`int`, defaults to 3):
            Tree decoding: levels below the root (the most draft tokens one round can accept). Written to
            `generation_config.tree_depth`.
        tree_top_k (`int`, defaults to 2):
            Tree decoding: children per expanded node, and nodes expanded per level (EAGLE-2's top-k). Written to
            `generation_config.tree_top_k`.
        tree_confidence_threshold (`float`, defaults to 0.0):
            Tree decoding: expand one more level only while the likeliest frontier node's path probability (the
            product of the drafter's probabilities along it) is at least this value; 0 always expands `tree_depth`
            levels. The tree analogue of `draft_confidence_threshold`: with a deep `tree_depth`, confident rounds
            draft deep and unsure ones stop early, which saves drafter forwards the target would reject. Written to
            `generation_config.tree_confidence_threshold`.
        tree_unmatched_copy_tokens (`int`, defaults to 4):
            Tree decoding with copies: when the prompt-lookup copy does not start with the drafter's own top-1, only
            its first this-many tokens join the tree as a branch (0: such a copy is dropped, as the chain hybrid
            does). A long unlikely branch costs verification width: on a 2-core CPU an fp32 SmolLM2 forward over 11
            tokens costs 1.26x one token, over 18 tokens 1.63x. 4 was the fastest measured (MT-bench and ShareGPT
            first turns: 2.23x vs 2.14x uncapped, 2.23x for 0; extraction 4.11x vs 3.76x). Written to
            `generation_config.tree_unmatched_copy_tokens`.
        datastore_tokens (`int`, defaults to 10):
            With a datastore (`drafter.datastore`, saved as `datastore.safetensors` beside the weights, see
            `coral_hf.datastore`): most tokens of the continuation of the target's own earlier answers proposed as
            one more branch of the tree (of them, at most `tree_unmatched_copy_tokens` are nodes the tree does not
            already have), or in the chain by the rule of copies (`prompt_lookup_tokens`), capped by the draft
            length budget like them. 0 disables it. Without a datastore it does nothing. Written to
            `generation_config.datastore_tokens`.
        datastore_min_ngram (`int`, defaults to 3):
            With a datastore: the shortest suffix of the context that counts as a match (shorter ones
            recur everywhere and predict little). Written to `generation_config.datastore_min_ngram`.
        head_mode (`str`, defaults to `"full"`):
            How draft logits are computed from the predicted feature: `"full"` (the target's whole LM head),
            `"router"` (CORAL's grouped head: only the router's top-`active_groups` vocabulary groups, `-inf`
            elsewhere) or `"shortlist"` (a static frequency shortlist of `shortlist_size` tokens, `-inf` elsewhere).
            Generation stays lossless in every mode: the target verifies each drafted token. Switch at run time with
            `drafter.set_head_mode(...)`.
        num_groups (`int`, *optional*):
            G, the number of vocabulary groups of the grouped head. `None` means the drafter has no grouped head
            (no router, no shortlist: `"full"` only); defaults to 64 when `head_mode` is not `"full"`.
        active_groups (`int`, *optional*):
            k, the groups the router activates per draft step (the head then costs k / G of the full head);
            defaults to `num_groups // 8`.
        group_strategy (`str`, *optional*):
            How the vocabulary was permuted into groups: `"contiguous"` (token ids in order), `"frequency"` (by
            training-token frequency, frequent tokens first) or `"cluster"` (balanced spherical k-means of the
            LM-head rows); defaults to `"contiguous"`. The permutation itself is saved with the drafter.
        shortlist_size (`int`, *optional*):
            Tokens of the static shortlist used by `head_mode="shortlist"`; defaults to the rows of `active_groups`
            groups (`vocab_size * active_groups / num_groups`), the same head cost as the router.
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
    fused_feature_layers: list[int] | None = None
    fc_bias: bool = False
    layer0_input_norm: bool = False
    input_norm: bool = True
    output_norm: bool = True
    draft_length: int = 5
    draft_confidence_threshold: float = 0.0
    prompt_lookup_tokens: int | None = None
    prompt_lookup_ngram: int = 8
    copy_confidence: float = 0.0
    copy_only_after: int = 1
    copy_only_tokens: int | None = None
    tree_total_tokens: int = 8
    tree_depth: int = 3
    tree_top_k: int = 2
    tree_confidence_threshold: float = 0.0
    tree_unmatched_copy_tokens: int = 4
    datastore_tokens: int = 10
    datastore_min_ngram: int = 3
    head_mode: str = "full"
    num_groups: int | None = None
    active_groups: int | None = None
    group_strategy: str | None = None
    shortlist_size: int | None = None
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
        if self.fused_feature_layers is not None:
            self.fused_feature_layers = fused_layer_indices(self.fused_feature_layers)
        if self.draft_length < 1:
            raise ValueError(f"draft_length must be >= 1, got {self.draft_length}.")
        if self.prompt_lookup_ngram < 1:
            raise ValueError(f"prompt_lookup_ngram must be >= 1, got {self.prompt_lookup_ngram}.")
        if self.copy_only_after < 0:
            raise ValueError(f"copy_only_after must be >= 0, got {self.copy_only_after}.")
        if self.copy_only_tokens is not None and self.copy_only_tokens < 1:
            raise ValueError(f"copy_only_tokens must be >= 1 (or None), got {self.copy_only_tokens}.")
        for name in ("tree_total_tokens", "tree_depth", "tree_top_k"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")
        if self.tree_unmatched_copy_tokens < 0:
            raise ValueError(f"tree_unmatched_copy_tokens must be >= 0, got {self.tree_unmatched_copy_tokens}.")
        if self.datastore_tokens < 0:
            raise ValueError(f"datastore_tokens must be >= 0, got {self.datastore_tokens}.")
        if self.datastore_min_ngram < 1:
            raise ValueError(f"datastore_min_ngram must be >= 1, got {self.datastore_min_ngram}.")
        if not 0.0 <= self.tree_confidence_threshold <= 1.0:
            raise ValueError(f"tree_confidence_threshold must be in [0, 1], got {self.tree_confidence_threshold}.")
        self._init_head_fields()
        super().__post_init__(**kwargs)

    def _init_head_fields(self, grouped_head: bool = False) -> None:
        """Validate the head fields; fill the grouped head's defaults when one is requested (or `grouped_head`)."""
        if self.head_mode not in HEAD_MODES:
            raise ValueError(f"head_mode must be one of {HEAD_MODES}, got {self.head_mode!r}.")
        if self.num_groups is None:
            if self.head_mode == "full" and not grouped_head:
                return
            self.num_groups = _DEFAULT_NUM_GROUPS
        vocab_size = self.target_vocab_size
        if self.num_groups < 1 or (vocab_size is not None and self.num_groups > vocab_size):
            raise ValueError(f"num_groups must be in [1, vocab_size={vocab_size}], got {self.num_groups}.")
        if self.active_groups is None:
            self.active_groups = max(1, self.num_groups // _DEFAULT_ACTIVE_FRACTION)
        if not 1 <= self.active_groups <= self.num_groups:
            raise ValueError(f"active_groups must be in [1, num_groups={self.num_groups}], got {self.active_groups}.")
        self.group_strategy = self.group_strategy or "contiguous"
        if self.group_strategy not in GROUP_STRATEGIES:
            raise ValueError(f"group_strategy must be one of {GROUP_STRATEGIES}, got {self.group_strategy!r}.")
        if self.shortlist_size is None and vocab_size is not None:
            self.shortlist_size = max(1, round(vocab_size * self.active_groups / self.num_groups))
        if self.shortlist_size is not None and not 1 <= self.shortlist_size <= (vocab_size or self.shortlist_size):
            raise ValueError(f"shortlist_size must be in [1, vocab_size={vocab_size}], got {self.shortlist_size}.")

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


__all__ = ["GROUP_STRATEGIES", "HEAD_MODES", "CoralConfig"]
