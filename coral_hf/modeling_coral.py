"""CoralDrafter: an EAGLE-style feature-level drafter that borrows its target's embedding and LM head."""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from torch import nn
from transformers import GenerationConfig, GenerationMixin, PreTrainedModel
from transformers.cache_utils import Cache
from transformers.generation.utils import GenerateDecoderOnlyOutput
from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES
from transformers.utils import ModelOutput, cached_file

from .configuration_coral import HEAD_MODES, CoralConfig, fused_layer_indices
from .datastore import DATASTORE_FILE, NgramDatastore
from .feature_recorder import TargetFeatureRecorder
from .generation import CoralCandidateGenerator
from .hub.push import push_drafter
from .hub.safety import check_safetensors_only
from .lm_head import GroupedLMHead, build_permutation, frequency_shortlist, token_groups
from .target_utils import (
    check_compatible,
    fused_layers_problem,
    target_fingerprint,
    unwrap_target,
    warn_if_slow_verification,
)
from .transformers_compat import cache_kwargs, passed_cache


def _load_datastore(name_or_path: str | os.PathLike, kwargs: dict[str, Any]) -> NgramDatastore | None:
    """The drafter's datastore from its directory or Hub repo (same revision and cache), None when it has none."""
    hub_options = ("revision", "token", "cache_dir", "local_files_only", "force_download", "subfolder")
    path = cached_file(
        name_or_path,
        DATASTORE_FILE,
        **{name: kwargs[name] for name in hub_options if name in kwargs},
        _raise_exceptions_for_missing_entries=False,
        _raise_exceptions_for_connection_errors=False,
    )
    return NgramDatastore.load(path) if path is not None else None


@dataclass
class CoralDrafterOutput(ModelOutput):
    """
    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, sequence_length, hidden_size)`):
            Predicted target features for the next position (the input of the target's LM head).
        logits (`torch.FloatTensor` of shape `(batch_size, sequence_length, vocab_size)`, *optional*):
            Target LM head applied to `last_hidden_state`, when `output_logits=True`.
        cache (`Cache`, *optional*):
            The drafter's own KV cache (the `past_key_values` passed in; named as transformers names it since 5.24,
            whose outputs rename a `past_key_values` field to `cache`).
    """

    last_hidden_state: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    cache: Cache | None = None


def _layer_classes(model_type: str) -> tuple[type[nn.Module], type[nn.Module], type[nn.Module]]:
    """The decoder-layer, rotary-embedding and RMSNorm classes of a model family (Llama, Qwen2, Mistral, ...)."""
    base_model_name = MODEL_MAPPING_NAMES.get(model_type)
    if base_model_name is None:
        raise ValueError(f"Unknown target model_type {model_type!r}: no transformers base model is registered for it.")
    prefix = base_model_name.removesuffix("Model")
    module = importlib.import_module(f"transformers.models.{model_type.replace('-', '_')}.modeling_{model_type}")
    try:
        return tuple(getattr(module, f"{prefix}{part}") for part in ("DecoderLayer", "RotaryEmbedding", "RMSNorm"))
    except AttributeError as error:
        raise ValueError(
            f"Target family {model_type!r} has no `{prefix}DecoderLayer` / `RotaryEmbedding` / `RMSNorm`; CORAL "
            "drafters support decoder-only families with rotary attention (Llama, Qwen2, Mistral, ...)."
        ) from error


def additive_attention_mask(allowed: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean mask (True = may attend) as the additive mask attention adds to its scores: 0 or the dtype's min."""
    mask = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return mask.masked_fill(~allowed, torch.finfo(dtype).min)


def causal_attention_mask(
    query_length: int,
    past_length: int,
    dtype: torch.dtype,
    device: torch.device,
    padding_mask: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """Additive `[batch, 1, query, past + query]` mask: causal, plus key padding when `padding_mask` is given.

    Returns `None` when every key is visible (a single new query without padding), the fast path for drafting.
    """
    if query_length == 1 and (padding_mask is None or bool(padding_mask.all())):
        return None
    key_positions = torch.arange(past_length + query_length, device=device)
    query_positions = torch.arange(query_length, device=device) + past_length
    allowed = key_positions[None, :] <= query_positions[:, None]
    allowed = allowed[None, None]
    if padding_mask is not None:
        allowed = allowed & padding_mask[:, None, None, :].bool()
    return additive_attention_mask(allowed, dtype)


class CoralDrafter(PreTrainedModel, GenerationMixin):
    """A CORAL drafter: `fc([embed(t_{p+1}); f_p])` followed by decoder layer(s) of the target's family.

    It predicts the target's next post-norm feature; token logits come from the target's own LM head. The target
    is a plain attribute, not a submodule: `state_dict`, `save_pretrained` and `.to()` touch only drafter weights.

    Use it as `target.generate(**inputs, assistant_model=drafter)`; transformers' assisted decoding calls the
    drafter's `generate`, which drafts with [`CoralCandidateGenerator`].

    `drafter.datastore` (an [`NgramDatastore`] of the target's own earlier answers, or None) proposes one more
    branch in tree decoding; `save_pretrained` writes it as `datastore.safetensors` and `from_pretrained` reads it
    back when the directory or Hub repo has one.
    """

    config_class = CoralConfig
    base_model_prefix = "coral"
    main_input_name = "input_ids"
    _supports_sdpa = True
    _supports_attention_backend = True
    _no_split_modules = ["fc"]

    def __init__(self, config: CoralConfig):
        super().__init__(config)
        layer_config = config.layer_config()
        layer_class, rotary_class, norm_class = _layer_classes(layer_config.model_type)
        hidden_size = config.target_hidden_size
        eps = layer_config.rms_norm_eps
        self.token_norm = norm_class(hidden_size, eps=eps) if config.input_norm else None
        self.feature_norm = norm_class(hidden_size, eps=eps) if config.input_norm else None
        self.fc = nn.Linear(2 * hidden_size, hidden_size, bias=config.fc_bias)
        self.fused_norms, self.fused_fc = self._fused_modules(config.fused_feature_layers)
        self.layers = nn.ModuleList([layer_class(layer_config, index) for index in range(config.num_draft_layers)])
        if not config.layer0_input_norm:
            self.layers[0].input_layernorm = nn.Identity()
        self.norm = norm_class(hidden_size, eps=eps) if config.output_norm else None
        self.rotary_emb = rotary_class(config=layer_config)
        # CORAL's lighter head (router + vocabulary permutation + shortlist); None for a full-head-only drafter.
        self.grouped_head = GroupedLMHead(config) if config.num_groups is not None else None
        self.generation_config = GenerationConfig(
            num_assistant_tokens=config.draft_length,
            num_assistant_tokens_schedule="constant",
            assistant_confidence_threshold=config.draft_confidence_threshold,
            prompt_lookup_num_tokens=config.prompt_lookup_tokens,
            max_matching_ngram_size=config.prompt_lookup_ngram,
            copy_confidence=config.copy_confidence,
            copy_only_after=config.copy_only_after,
            copy_only_tokens=config.copy_only_tokens,
            tree_total_tokens=config.tree_total_tokens,
            tree_depth=config.tree_depth,
            tree_top_k=config.tree_top_k,
            tree_confidence_threshold=config.tree_confidence_threshold,
            tree_unmatched_copy_tokens=config.tree_unmatched_copy_tokens,
            datastore_tokens=config.datastore_tokens,
            datastore_min_ngram=config.datastore_min_ngram,
        )
        self.__dict__["_target"] = None
        self.__dict__["_feature_recorder"] = None
        self.__dict__["_candidate_generator"] = None
        self.__dict__["datastore"] = None
        self.post_init()

    def _fused_modules(self, layers: list[int] | None) -> tuple[nn.ModuleList | None, nn.Linear | None]:
        """One RMSNorm per fused target layer and the projection of their concatenation (None, None without)."""
        if not layers:
            return None, None
        hidden_size = self.config.target_hidden_size
        norm_class = _layer_classes(self.config.target_model_type)[2]
        eps = self.config.layer_config().rms_norm_eps
        norms = nn.ModuleList([norm_class(hidden_size, eps=eps) for _ in layers])
        return norms, nn.Linear(len(layers) * hidden_size, hidden_size, bias=False)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        super()._init_weights(module)
        if module is self.fused_fc:
            module.weight.zero_()  # fused features start unused: the drafter begins as the last-layer-only one
        if module is self.fc:
            # Start close to "pass the target feature through": the feature half of fc is the identity.
            hidden_size = self.config.target_hidden_size
            module.weight.normal_(mean=0.0, std=0.02)
            module.weight[:, hidden_size:] += torch.eye(hidden_size, dtype=module.weight.dtype)

    # ------------------------------------------------------------------ target

    @property
    def target(self) -> nn.Module | None:
        """The model this drafter drafts for (not part of the drafter's state)."""
        return self.__dict__["_target"]

    @property
    def feature_recorder(self) -> TargetFeatureRecorder | None:
        return self.__dict__["_feature_recorder"]

    def attach(self, target: nn.Module) -> CoralDrafter:
        """Attach to `target` after checking it is the model this drafter was built for; returns self."""
        check_compatible(self.config, target)
        self.detach()
        if self.config.target_fingerprint is None:
            self.config.target_fingerprint = target_fingerprint(target)
        self.__dict__["_target"] = target
        self.__dict__["_feature_recorder"] = TargetFeatureRecorder(target, self)
        if self.grouped_head is not None:
            self.grouped_head.bind(unwrap_target(target).get_output_embeddings())
        return self

    def detach(self) -> CoralDrafter:
        """Remove the hooks from the current target and forget it; returns self."""
        if self.feature_recorder is not None:
            self.feature_recorder.remove()
        self.__dict__["_target"] = None
        self.__dict__["_feature_recorder"] = None
        self.__dict__["_candidate_generator"] = None
        if self.grouped_head is not None:
            self.grouped_head.unbind()
        return self

    def _require_target(self) -> PreTrainedModel:
        if self.target is None:
            raise RuntimeError(
                "This CoralDrafter is not attached to a target. Use `drafter.attach(target)`, "
                "`CoralDrafter.from_pretrained(path, target=target)` or `coral_hf.load_drafter(path, target=target)`."
            )
        return unwrap_target(self.target)

    @classmethod
    def from_target(
        cls,
        target: nn.Module,
        dtype: torch.dtype | None = None,
        token_counts: torch.Tensor | None = None,
        **config_overrides: Any,
    ) -> CoralDrafter:
        """A new, untrained drafter shaped for `target` and attached to it.

        Args:
            target: the causal LM to draft for (PEFT-wrapped models work).
            dtype: drafter parameter dtype; defaults to the target's.
            token_counts: `[vocab]` training-token counts (`coral_hf.lm_head.token_frequencies`), for a grouped head
                with `group_strategy="frequency"` and for its shortlist; see [`~CoralDrafter.init_grouped_head`].
            config_overrides: any [`CoralConfig`] field (e.g. `num_draft_layers=2`, `head_mode="router"`).
        """
        model = unwrap_target(target)
        config = CoralConfig.from_target_config(
            model.config, target_fingerprint=target_fingerprint(model), **config_overrides
        )
        drafter = cls(config).to(device=model.device, dtype=dtype or model.dtype)
        target_norm = getattr(model.base_model, "norm", None)
        if drafter.norm is not None and target_norm is not None:
            with torch.no_grad():  # start from the target's own final norm: the LM head's input scale
                drafter.norm.weight.copy_(target_norm.weight)
        drafter.attach(target)
        if drafter.grouped_head is not None:
            drafter.init_grouped_head(token_counts=token_counts)
        return drafter

    @torch.no_grad()
    def add_draft_layers(self, num_draft_layers: int) -> CoralDrafter:
        """Grow a trained drafter to `num_draft_layers` decoder layers without changing what it drafts.

        Each new layer starts as a copy of the last one with its two output projections (attention `o_proj`, MLP
        `down_proj`) zeroed, so its residual updates are zero: the grown drafter computes exactly what the trained one
        did, and training then gives it the capacity of a deeper drafter from where the smaller one stood (a second
        layer from scratch would have to relearn what the first already knows).
        """
        current = len(self.layers)
        if num_draft_layers < current:
            raise ValueError(f"Cannot shrink a drafter of {current} layers to {num_draft_layers}.")
        self.config.num_draft_layers = num_draft_layers
        layer_config = self.config.layer_config()
        layer_class = type(self.layers[-1])
        last = self.layers[-1]
        for index in range(current, num_draft_layers):
            layer = layer_class(layer_config, index).to(device=self.device, dtype=self.dtype)
            own_input_norm = layer.input_layernorm.state_dict()  # the copied first layer may have none (EAGLE)
            layer.load_state_dict(
                {**last.state_dict(), **{f"input_layernorm.{k}": v for k, v in own_input_norm.items()}}
            )
            for projection in (layer.self_attn.o_proj, layer.mlp.down_proj):
                projection.weight.zero_()
                if projection.bias is not None:
                    projection.bias.zero_()
            self.layers.append(layer)
        return self

    @torch.no_grad()
    def add_fused_feature_layers(self, layers: list[int]) -> CoralDrafter:
        """Give a trained drafter EAGLE-3-style fused features of the target `layers` without changing what it drafts.

        The new projection starts at zero, so the drafter computes what it did; training then teaches it what the
        target's lower layers add to the last layer's feature. An attached drafter re-attaches, so that its
        recorder also reads the new layers during generation.
        """
        if self.config.fused_feature_layers is not None:
            raise ValueError(f"This drafter already fuses target layers {self.config.fused_feature_layers}.")
        layers = fused_layer_indices(layers)
        problem = fused_layers_problem(layers, self.target) if self.target is not None else None
        if problem:
            raise ValueError(problem)
        norms, fc = self._fused_modules(layers)
        self.config.fused_feature_layers = layers
        self.fused_norms = norms.to(device=self.device, dtype=self.dtype)
        self.fused_fc = fc.to(device=self.device, dtype=self.dtype)
        self.fused_fc.weight.zero_()
        if self.target is not None:
            self.attach(self.target)
        return self

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: Any, *model_args: Any, target: nn.Module | None = None, **kwargs: Any
    ) -> CoralDrafter:
        """Load a drafter (safetensors only) and, when `target` is given, check it and attach it."""
        kwargs.setdefault("use_safetensors", True)
        if kwargs["use_safetensors"]:  # `use_safetensors=False` is the explicit opt-in for a trusted pickle
            check_safetensors_only(
                pretrained_model_name_or_path,
                revision=kwargs.get("revision"),
                token=kwargs.get("token"),
                local_files_only=kwargs.get("local_files_only", False),
            )
        try:
            drafter = super().from_pretrained(pretrained_model_name_or_path, *model_args, **kwargs)
        except SafetensorError as error:
            raise OSError(
                f"{pretrained_model_name_or_path}: the drafter's weights (model.safetensors) are corrupt or truncated "
                f"({error}); download or save the drafter again."
            ) from error
        drafter.datastore = _load_datastore(pretrained_model_name_or_path, kwargs)
        if target is not None:
            check_compatible(drafter.config, target)
            model = unwrap_target(target)
            if "dtype" not in kwargs:
                drafter.to(dtype=model.dtype)
            drafter.to(model.device).attach(target)
        return drafter

    def save_pretrained(self, save_directory: str | os.PathLike, *args: Any, **kwargs: Any) -> None:
        """`PreTrainedModel.save_pretrained`, plus `datastore.safetensors` when the drafter has a datastore."""
        super().save_pretrained(save_directory, *args, **kwargs)
        if self.datastore is not None:
            self.datastore.save(Path(save_directory) / DATASTORE_FILE)

    def push_to_hub(
        self,
        repo_id: str,
        *,
        commit_message: str | None = None,
        commit_description: str | None = None,
        private: bool | None = None,
        token: str | bool | None = None,
        revision: str | None = None,
        create_pr: bool = False,
        tags: list[str] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Push config, weights, generation config and a rendered model card in one commit (see `coral_hf.hub`).

        Only the arguments above are supported; any other keyword raises instead of being silently dropped.
        """
        if kwargs:
            raise TypeError(
                f"CoralDrafter.push_to_hub got unsupported argument(s) {sorted(kwargs)}; it takes commit_message, "
                "commit_description, private, token, revision, create_pr and tags."
            )
        return push_drafter(
            self,
            repo_id,
            commit_message=commit_message,
            commit_description=commit_description,
            private=private,
            token=token,
            revision=revision,
            create_pr=create_pr,
            tags=tags or (),
        )

    # ------------------------------------------------------------------ forward

    def get_input_embeddings(self) -> nn.Module:
        return self._require_target().get_input_embeddings()

    def get_output_embeddings(self) -> nn.Module:
        return self._require_target().get_output_embeddings()

    # ------------------------------------------------------------------ head

    @property
    def head_mode(self) -> str:
        """How draft logits are computed: `"full"`, `"router"` or `"shortlist"` (see [`CoralConfig`])."""
        return self.config.head_mode

    def set_head_mode(self, mode: str, active_groups: int | None = None) -> CoralDrafter:
        """Switch the head at run time, without reloading (e.g. to compare heads); returns self.

        Args:
            mode: `"full"`, `"router"` or `"shortlist"`; the latter two need a grouped head.
            active_groups: new k for the router (default: keep `config.active_groups`).
        """
        self._check_head_mode(mode)
        if active_groups is not None:
            if not 1 <= active_groups <= self.config.num_groups:
                raise ValueError(f"active_groups must be in [1, {self.config.num_groups}], got {active_groups}.")
            self.config.active_groups = active_groups
        self.config.head_mode = mode
        return self

    def _check_head_mode(self, mode: str) -> None:
        if mode not in HEAD_MODES:
            raise ValueError(f"head_mode must be one of {HEAD_MODES}, got {mode!r}.")
        if mode != "full" and self.grouped_head is None:
            raise ValueError(
                f"head_mode={mode!r} needs a grouped head, and this drafter has none: build one with "
                "`drafter.init_grouped_head(...)` (then train its router), or create the drafter with `num_groups`."
            )

    @torch.no_grad()
    def init_grouped_head(
        self,
        strategy: str | None = None,
        token_counts: torch.Tensor | None = None,
        num_groups: int | None = None,
        active_groups: int | None = None,
        shortlist_size: int | None = None,
        seed: int = 0,
    ) -> CoralDrafter:
        """Build the grouped head: vocabulary permutation, shortlist, and a fresh (untrained) router; returns self.

        Arguments left `None` keep the config's values (or their defaults, see [`CoralConfig`]). The router starts
        from a context-free choice: the k groups of most training mass when `token_counts` is given, see
        `GroupRouter.reset_parameters`; train it with `coral_hf.training.router`. The head mode is not changed.

        Args:
            strategy: `"contiguous"`, `"frequency"` (needs `token_counts`) or `"cluster"` (balanced k-means of the
                attached target's LM-head rows).
            token_counts: `[vocab]` counts of the tokens the drafter predicts, e.g. `coral_hf.lm_head.
                token_frequencies(dataset["input_ids"], vocab_size, dataset["loss_mask"])`. Without them the
                shortlist is a placeholder (the lowest token ids) and the router's prior is uniform.
            num_groups, active_groups, shortlist_size: G, k and the shortlist size.
            seed: seed of the clustering.
        """
        config = self.config
        if num_groups is not None and num_groups != config.num_groups:
            config.active_groups = config.shortlist_size = None  # their defaults follow G
        for name, value in (
            ("num_groups", num_groups),
            ("active_groups", active_groups),
            ("group_strategy", strategy),
            ("shortlist_size", shortlist_size),
        ):
            if value is not None:
                setattr(config, name, value)
        config._init_head_fields(grouped_head=True)
        lm_head = None if self.target is None else unwrap_target(self.target).get_output_embeddings()
        permutation = build_permutation(
            config.group_strategy,
            config.target_vocab_size,
            config.num_groups,
            lm_head_weight=None if lm_head is None else lm_head.weight,
            token_counts=token_counts,
            seed=seed,
        )
        head = GroupedLMHead(config).to(self.device)
        head.router.to(self.dtype)
        if token_counts is None:
            head.set_grouping(permutation, torch.arange(config.shortlist_size))
            head.router.reset_parameters()
        else:
            counts = token_counts.flatten().double()
            head.set_grouping(permutation, frequency_shortlist(counts, config.shortlist_size))
            group_counts = torch.zeros(config.num_groups, dtype=torch.float64)
            group_counts.index_add_(0, token_groups(permutation, config.num_groups), counts)
            head.router.reset_parameters(group_counts)
        self.grouped_head = head
        if lm_head is not None:
            head.bind(lm_head)
        return self

    def compute_logits(self, hidden_states: torch.Tensor, head_mode: str | None = None) -> torch.Tensor:
        """Token logits (float32, full vocabulary) of predicted features, through the target's LM head.

        In `"router"` / `"shortlist"` head mode the logits outside the active groups / the shortlist are `-inf`:
        they are the distribution the drafter samples from, which transformers' speculative sampling must see.
        The head's weights are detached: training the drafter never changes its target.

        Args:
            hidden_states: `[..., hidden_size]` predicted features.
            head_mode: overrides the drafter's head mode for this call (training losses want `"full"`).
        """
        lm_head = self.get_output_embeddings()
        head_mode = head_mode or self.config.head_mode
        self._check_head_mode(head_mode)
        if head_mode == "shortlist":
            return self.grouped_head.shortlist_logits(hidden_states, lm_head)
        if head_mode == "router":
            return self.grouped_head.routed_logits(hidden_states, lm_head, self.config.active_groups)
        bias = lm_head.bias.detach() if getattr(lm_head, "bias", None) is not None else None
        weight = lm_head.weight.detach()
        return nn.functional.linear(hidden_states.to(weight.dtype), weight, bias).float()

    def compute_shortlist_logits(self, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.LongTensor]:
        """Float32 logits over the shortlist (the draft vocabulary) only, and the token id of each column.

        Training with a draft vocabulary (`logit_vocab="shortlist"`) computes its token losses on these
        `[..., shortlist_size]` logits: the vocabulary-sized work shrinks by `vocab_size / shortlist_size`. The
        head's weights are detached, as in [`~CoralDrafter.compute_logits`].
        """
        if self.grouped_head is None:
            raise ValueError(
                "A draft vocabulary needs a shortlist: create the drafter with `num_groups` and `token_counts` "
                "(`CoralDrafter.from_target(target, token_counts=..., num_groups=..., shortlist_size=...)`)."
            )
        values = self.grouped_head.shortlist_values(hidden_states, self.get_output_embeddings())
        return values.float(), self.grouped_head.shortlist

    def forward(
        self,
        input_ids: torch.LongTensor,
        hidden_states: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.LongTensor | None = None,
        past_key_values: Cache | None = None,
        use_cache: bool = False,
        output_logits: bool = False,
        fused_hidden_states: torch.Tensor | None = None,
    ) -> CoralDrafterOutput:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`):
                Tokens `t_{p+1}`, one position ahead of the features.
            hidden_states (`torch.Tensor` of shape `(batch_size, sequence_length, hidden_size)`):
                Target features `f_p` (post final norm), or the drafter's own predictions when drafting ahead.
            attention_mask (`torch.Tensor`, *optional*):
                Either a `(batch_size, past + sequence_length)` padding mask (1 = keep), combined with a causal mask,
                or a ready additive `(batch_size, 1, sequence_length, keys)` mask (multi-step training layouts).
            position_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`, *optional*):
                Absolute positions `p`; default: continue after the cache.
            past_key_values (`Cache`, *optional*):
                The drafter's KV cache, extended in place when `use_cache=True`.
            output_logits (`bool`, defaults to `False`):
                Also return the target LM head's logits of the predicted features.
            fused_hidden_states (`torch.Tensor` of shape `(batch_size, seq_len, num_fused, hidden_size)`, *optional*):
                Outputs of the target layers `config.fused_feature_layers` at the positions of real features `f_p`;
                None where `hidden_states` are the drafter's own predictions.
        """
        if hidden_states.shape[:-1] != input_ids.shape or hidden_states.shape[-1] != self.config.target_hidden_size:
            raise ValueError(
                f"hidden_states must be [batch, seq, {self.config.target_hidden_size}] matching input_ids "
                f"{tuple(input_ids.shape)}, got {tuple(hidden_states.shape)}."
            )
        embeddings = nn.functional.embedding(input_ids, self.get_input_embeddings().weight.detach()).to(self.dtype)
        hidden_states = hidden_states.to(self.dtype)
        if self.token_norm is not None:
            embeddings, hidden_states = self.token_norm(embeddings), self.feature_norm(hidden_states)
        hidden_states = self.fc(torch.cat([embeddings, hidden_states], dim=-1))
        if fused_hidden_states is not None:
            hidden_states = hidden_states + self._fuse(fused_hidden_states, input_ids.shape)
        batch_size, query_length = input_ids.shape
        past_length = past_key_values.get_seq_length() if past_key_values is not None else 0
        if position_ids is None:
            position_ids = torch.arange(query_length, device=input_ids.device) + past_length
            position_ids = position_ids.unsqueeze(0).expand(batch_size, -1)
        if attention_mask is None or attention_mask.dim() == 2:
            attention_mask = causal_attention_mask(
                query_length, past_length, hidden_states.dtype, hidden_states.device, padding_mask=attention_mask
            )
        elif attention_mask.dtype == torch.bool:
            attention_mask = additive_attention_mask(attention_mask, hidden_states.dtype)
        position_embeddings = self.rotary_emb(hidden_states, position_ids=position_ids)
        for layer in self.layers:
            hidden_states = layer(
                hidden_states,
                attention_mask=attention_mask,
                position_ids=position_ids,
                use_cache=use_cache,
                position_embeddings=position_embeddings,
                **cache_kwargs(past_key_values),
            )
        if self.norm is not None:
            hidden_states = self.norm(hidden_states)
        return CoralDrafterOutput(
            last_hidden_state=hidden_states,
            logits=self.compute_logits(hidden_states) if output_logits else None,
            cache=past_key_values,
        )

    def _fuse(self, fused_hidden_states: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        if self.fused_fc is None:
            raise ValueError("This drafter fuses no target layers (config.fused_feature_layers is None).")
        expected = (*shape, len(self.fused_norms), self.config.target_hidden_size)
        if tuple(fused_hidden_states.shape) != expected:
            raise ValueError(f"fused_hidden_states must be {expected}, got {tuple(fused_hidden_states.shape)}.")
        fused_hidden_states = fused_hidden_states.to(self.dtype)
        normed = [norm(fused_hidden_states[..., index, :]) for index, norm in enumerate(self.fused_norms)]
        return self.fused_fc(torch.cat(normed, dim=-1))

    # ------------------------------------------------------------------ generation

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.LongTensor | None = None,
        generation_config: GenerationConfig | None = None,
        logits_processor: Any = None,
        max_new_tokens: int | None = None,
        **kwargs: Any,
    ) -> GenerateDecoderOnlyOutput:
        """Draft candidates for the target; called by transformers' assisted decoding, not by users.

        The first call of a generation carries no cache (`past_key_values`, `cache` since transformers 5.24): it
        starts a fresh [`CoralCandidateGenerator`]. Later calls hand back the cache this method returned, the
        generator's [`DraftHandle`], which identifies that generator.
        """
        if generation_config is None or not getattr(generation_config, "is_assistant", False):
            raise TypeError(
                "CoralDrafter drafts for a target model and cannot generate text on its own. "
                "Use `target.generate(**inputs, assistant_model=drafter)`."
            )
        self._require_target()
        if input_ids.shape[0] != 1:
            raise ValueError(f"CoralDrafter supports batch size 1 only, got {input_ids.shape[0]}.")
        generator = self.__dict__["_candidate_generator"]
        handle = passed_cache(kwargs)
        if handle is None:
            warn_if_slow_verification(self.target)
            generator = CoralCandidateGenerator(self, generation_config, logits_processor)
            self.__dict__["_candidate_generator"] = generator
        elif generator is None or handle is not generator.handle:
            raise RuntimeError("Drafter state does not belong to this generation (one generation at a time).")
        sequences, scores = generator.get_candidates(input_ids, max_new_tokens=max_new_tokens)
        return GenerateDecoderOnlyOutput(
            sequences=sequences, scores=tuple(scores.unbind(dim=1)), **cache_kwargs(generator.handle)
        )

    @property
    def last_generation_stats(self) -> dict[str, int] | None:
        """Draft rounds and drafted tokens of the latest generation (chain or tree).

        Chain (`assistant_model=`): `rounds`, `drafted`, `copied_rounds` and, of those, `copy_only_rounds` (copies
        proposed with no drafter forward, see `CoralConfig.copy_only_after`) and `datastore_rounds` (proposals taken
        from the datastore). A round is one drafter call, followed by
        one target forward. When a single token of budget is left, transformers runs a last target forward without
        drafting, which this count does not see; count target forwards with a streamer
        (`coral_hf.eval.bench.RoundRecorder`) when that matters. Tree (`coral_hf.tree_generate`): `rounds` (target
        forwards after the prompt's), `drafted` (verified draft nodes), `accepted` (accepted draft tokens),
        `copy_only_rounds` and `drafter_forwards`.
        """
        generator = self.__dict__["_candidate_generator"]
        return None if generator is None else generator.stats()


__all__ = ["CoralDrafter", "CoralDrafterOutput"]
