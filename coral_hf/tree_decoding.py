"""Tree decoding: EAGLE-2's dynamic draft tree, verified in one target forward, as a `generate()` decoding method.

transformers' assisted decoding verifies one chain of draft tokens. A tree verifies several continuations at
once: the drafter expands the likeliest nodes level by level, the best `tree_total_tokens` nodes are verified in a
single target forward (a 4D tree attention mask, per-node positions), and the longest path the target agrees with
is kept. Both KV caches are compacted to that path.

    out = target.generate(**inputs, custom_generate=coral_hf.tree_generate, drafter=drafter, max_new_tokens=64)

Lossless by construction: greedy follows the target's argmax at every node; sampling is sequential rejection over
a node's children with the residual renormalised after each rejection. The children are picked deterministically
(top-k), so each is a one-hot proposal: child `x` is accepted with probability `p'(x)` under the current residual
`p'`, and when all are rejected the token is drawn from what remains, which gives exactly the target's `p`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from transformers import GenerationConfig
from transformers.cache_utils import DynamicCache
from transformers.generation.logits_process import LogitsProcessorList
from transformers.generation.stopping_criteria import StoppingCriteriaList
from transformers.generation.streamers import BaseStreamer
from transformers.generation.utils import GenerateDecoderOnlyOutput

from .generation import (
    catch_up,
    copy_only_after,
    copy_only_tokens,
    datastore_settings,
    lookup_continuation,
    lookup_ngram,
)
from .modeling_coral import additive_attention_mask
from .target_utils import unwrap_target, warn_if_slow_verification
from .transformers_compat import CACHE_KWARG, cache_kwargs, passed_cache

if TYPE_CHECKING:
    from .modeling_coral import CoralDrafter


@dataclass
class DraftTree:
    """A draft tree in verification order: node 0 is the root (the last committed token), parents come first.

    Args:
        tokens: `[m]` token of each node.
        parents: `[m]` index of each node's parent (-1 for the root).
        depths: `[m]` distance from the root.
        copy_tail: the last node of the prompt-lookup copy branch, -1 when the tree has none.
    """

    tokens: torch.LongTensor
    parents: torch.LongTensor
    depths: torch.LongTensor
    copy_tail: int = -1

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def ancestor_mask(self) -> torch.BoolTensor:
        """`[m, m]`: entry (i, j) is True when node j is node i or one of its ancestors (what node i may attend)."""
        return tree_ancestor_mask(self.parents)

    def children(self) -> list[list[int]]:
        """Each node's children, in verification order (likeliest first)."""
        kids: list[list[int]] = [[] for _ in range(len(self))]
        for node, parent in enumerate(self.parents.tolist()):
            if parent >= 0:
                kids[parent].append(node)
        return kids


def tree_ancestor_mask(parents: torch.LongTensor) -> torch.BoolTensor:
    """Ancestor-or-self matrix of a tree given as parent indices, parents listed before their children."""
    size = parents.shape[0]
    mask = torch.eye(size, dtype=torch.bool, device=parents.device)
    for node, parent in enumerate(parents.tolist()):
        if parent >= 0:
            if parent >= node:
                raise ValueError(f"node {node}'s parent {parent} comes after it: list parents first.")
            mask[node] |= mask[parent]
    return mask


def sample_among_candidates(probs: torch.Tensor, candidates: list[int]) -> tuple[int | None, int]:
    """Lossless choice of the next token when several deterministic candidates were proposed.

    Candidate `i` is accepted with probability `residual[x_i] / residual.sum()`; after a rejection its token's mass
    is removed from the residual. If every candidate is rejected, the token is drawn from the residual. The result
    is distributed exactly as `probs`.

    Args:
        probs: `[vocab]` the target's (processed) next-token distribution.
        candidates: the proposed tokens, distinct, in the order they are tried.

    Returns:
        The index of the accepted candidate (None when all were rejected) and the chosen token.
    """
    residual = probs.clone()
    for index, token in enumerate(candidates):
        mass = residual.sum()
        if torch.rand((), device=probs.device) * mass < residual[token]:
            return index, token
        residual[token] = 0.0
    return None, int(torch.multinomial(residual / residual.sum(), 1))


class TreeDecoder:
    """One tree-decoding generation of a target with an attached [`CoralDrafter`] (batch size 1).

    Args:
        target: the generating model (the drafter must be attached to it).
        drafter: the attached drafter.
        generation_config: the call's generation config (sampling, EOS, limits).
        logits_processor: the call's prepared logits processors, applied to the target's logits at every node with
            that node's own context.
        total_tokens, depth, top_k: tree size (root included), levels below the root, children per expanded node.
        confidence_threshold: expand a level only while the likeliest frontier node's path probability is at least
            this (0: always `depth` levels).
        unmatched_copy_tokens: longest copy branch when the copy does not start with the drafter's top-1.
    """

    def __init__(
        self,
        target: torch.nn.Module,
        drafter: CoralDrafter,
        generation_config: GenerationConfig,
        logits_processor: LogitsProcessorList,
        total_tokens: int,
        depth: int,
        top_k: int,
        confidence_threshold: float = 0.0,
        unmatched_copy_tokens: int = 4,
    ):
        for name, value in (("tree_total_tokens", total_tokens), ("tree_depth", depth), ("tree_top_k", top_k)):
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}.")
        if int(unmatched_copy_tokens) < 0:
            raise ValueError(f"tree_unmatched_copy_tokens must be >= 0, got {unmatched_copy_tokens}.")
        self.unmatched_copy_tokens = int(unmatched_copy_tokens)
        self.target = target
        self.drafter = drafter
        self.recorder = drafter.feature_recorder
        self.generation_config = generation_config
        self.logits_processor = logits_processor
        self.do_sample = bool(generation_config.do_sample)
        self.total_tokens, self.depth, self.top_k = int(total_tokens), int(depth), int(top_k)
        if not 0.0 <= confidence_threshold <= 1.0:
            raise ValueError(f"tree_confidence_threshold must be in [0, 1], got {confidence_threshold}.")
        self.min_log_confidence = math.log(confidence_threshold) if confidence_threshold > 0 else float("-inf")
        lookup_tokens = getattr(drafter.generation_config, "prompt_lookup_num_tokens", None)
        self.lookup_tokens = int(lookup_tokens or 0)
        self.lookup_ngram = lookup_ngram(drafter)
        self.copy_only_after = copy_only_after(drafter)
        self.copy_only_tokens = copy_only_tokens(drafter, self.lookup_tokens)
        self.datastore = drafter.datastore
        settings = datastore_settings(drafter)
        self.datastore_tokens = settings["datastore_tokens"]
        self.datastore_min_ngram = settings["datastore_min_ngram"]
        self.copy_streak = 0  # consecutive rounds whose copy branch was accepted to its end
        self.copy_only_rounds = 0
        self.target_cache = DynamicCache()
        self.drafter_cache = DynamicCache()
        self.rounds = 0
        self.drafted = 0
        self.accepted = 0
        self.drafter_forwards = 0

    def stats(self) -> dict[str, int]:
        """Verification rounds (target forwards after the prompt), verified draft nodes, accepted draft tokens,
        rounds that verified a prompt-lookup copy alone (no drafter forward, see `copy_only_after`) and drafter
        forwards (catch-ups and tree levels)."""
        return {
            "rounds": self.rounds,
            "drafted": self.drafted,
            "accepted": self.accepted,
            "copy_only_rounds": self.copy_only_rounds,
            "drafter_forwards": self.drafter_forwards,
        }

    # ------------------------------------------------------------------ drafting

    def _log_probs(self, features: torch.Tensor) -> torch.Tensor:
        return self.drafter.compute_logits(features).log_softmax(dim=-1)

    def build_tree(self, sequence: torch.LongTensor, depth: int, max_copy: int = 0) -> DraftTree:
        """Expand the drafter's likeliest nodes for `depth` levels and keep the best `total_tokens - 1` of them.

        Each level runs the drafter once on the `top_k` frontier nodes of highest cumulative log-probability; every
        child of the frontier becomes a candidate. Scores only fall along a path, so the best nodes (ties broken
        by creation order) always include their ancestors. A prompt-lookup copy of up to `prompt_lookup_num_tokens`
        tokens (and at most `max_copy`, the length budget), when found, is added as one more branch; it may reach
        deeper than `depth`, as copies cost nothing to propose. When the copy starts with the drafter's own top-1,
        only the root's children are drafted besides it; when it does not, only its first
        `tree_unmatched_copy_tokens` tokens join (each verified token costs width); during a streak of fully
        accepted copies (`copy_only_after`) a copy of up to `copy_only_tokens` is proposed alone, with no drafter
        forward.
        A level is expanded only while its likeliest frontier node is at least `tree_confidence_threshold` likely.
        With a datastore (`drafter.datastore`), the usual continuation of the context's longest suffix found in it
        (up to `datastore_tokens`) joins the same way, adding at most `tree_unmatched_copy_tokens` new nodes.
        """
        device = sequence.device
        root = sequence[0, -1]
        tokens, parents, depths = [root], [-1], [0]
        scores = [0.0]
        in_streak = 0 < self.copy_only_after <= self.copy_streak
        copy_length = min(self.copy_only_tokens if in_streak else self.lookup_tokens, max_copy)
        copy = lookup_continuation(sequence[0], self.lookup_ngram, copy_length) if copy_length > 0 else None
        copy_only = copy is not None and in_streak
        self.copy_only_rounds += int(copy_only)
        if depth > 0 and self.total_tokens > 1 and not copy_only:
            verified = sequence.shape[1] - 1
            root_feature = catch_up(self.drafter, self.drafter_cache, sequence)[0]
            self.drafter_forwards += 1
            prefix_length = self.drafter_cache.get_seq_length()
            log_probs = self._log_probs(root_feature)[0]
            top = log_probs.topk(min(self.top_k, log_probs.shape[-1]))
            if copy is not None and int(copy[0]) == int(top.indices[0]):
                # The copy starts with the drafter's own top-1 (the chain hybrid's rule): it is the likelier
                # continuation, so spend no drafter forwards below the root's children.
                depth = 1 if copy.shape[0] > 1 else depth
            elif copy is not None:
                copy = copy[: self.unmatched_copy_tokens] if self.unmatched_copy_tokens > 0 else None
            frontier = []
            for value, token in zip(top.values.tolist(), top.indices.tolist(), strict=True):
                if value > float("-inf"):
                    tokens.append(torch.tensor(token, device=device))
                    parents.append(0)
                    depths.append(1)
                    scores.append(value)
                    frontier.append(len(tokens) - 1)
            parent_features = root_feature.expand(len(frontier), -1)
            slot: dict[int, int] = {}  # node -> its entry in the drafter's cache, beyond the verified prefix
            for level in range(1, depth):
                if not frontier or max(scores[node] for node in frontier) < self.min_log_confidence:
                    break
                for node in frontier:
                    slot[node] = len(slot)
                keys = prefix_length + len(slot)
                allowed = torch.zeros(1, 1, len(frontier), keys, dtype=torch.bool, device=device)
                allowed[..., :prefix_length] = True
                for row, node in enumerate(frontier):
                    ancestor = node
                    while ancestor > 0:
                        allowed[0, 0, row, prefix_length + slot[ancestor]] = True
                        ancestor = parents[ancestor]
                out = self.drafter(
                    input_ids=torch.stack([tokens[node] for node in frontier]).unsqueeze(0),
                    hidden_states=parent_features.unsqueeze(0),
                    attention_mask=allowed,
                    position_ids=torch.full((1, len(frontier)), verified + level - 1, device=device),
                    past_key_values=self.drafter_cache,
                    use_cache=True,
                )
                self.drafter_forwards += 1
                predicted = out.last_hidden_state[0]
                log_probs = self._log_probs(predicted)
                top = log_probs.topk(min(self.top_k, log_probs.shape[-1]), dim=-1)
                candidates = []
                for row, node in enumerate(frontier):
                    for value, token in zip(top.values[row].tolist(), top.indices[row].tolist(), strict=True):
                        if value > float("-inf"):
                            tokens.append(torch.tensor(token, device=device))
                            parents.append(node)
                            depths.append(level + 1)
                            scores.append(scores[node] + value)
                            candidates.append((len(tokens) - 1, row))
                best = sorted(candidates, key=lambda item: -scores[item[0]])[: self.top_k]
                frontier = [node for node, _ in best]
                parent_features = predicted[[row for _, row in best]]
            # Keep the verified prefix only: tree entries are recomputed from real features once verified.
            self.drafter_cache.crop(prefix_length - self.drafter_cache.get_seq_length())
        order = torch.tensor(scores[1:]).argsort(descending=True, stable=True)[: self.total_tokens - 1] + 1
        keep = [0] + sorted(order.tolist(), key=lambda node: (depths[node], node))
        copy_tail = -1
        if copy is not None:
            copy_tail = self._add_copy_branch(keep, tokens, parents, depths, copy)
        datastore_length = min(self.datastore_tokens, max_copy)
        if self.datastore is not None and datastore_length > 0:
            continuation = self.datastore.lookup(sequence[0], datastore_length, self.datastore_min_ngram)
            if continuation is not None:
                self._add_copy_branch(keep, tokens, parents, depths, continuation, self.unmatched_copy_tokens)
        index = {node: position for position, node in enumerate(keep)}
        return DraftTree(
            tokens=torch.stack([tokens[node] for node in keep]),
            parents=torch.tensor([index[parents[node]] if node else -1 for node in keep], device=device),
            depths=torch.tensor([depths[node] for node in keep], device=device),
            copy_tail=index[copy_tail] if copy_tail >= 0 else -1,
        )

    @staticmethod
    def _add_copy_branch(
        keep: list[int],
        tokens: list[torch.Tensor],
        parents: list[int],
        depths: list[int],
        copy: torch.LongTensor,
        max_new: int | None = None,
    ) -> int:
        """Follow the copied continuation down the kept tree; nodes it does not find are added as a new branch.

        The new nodes are appended to `keep` after their parents, so it stays in verification order; at most
        `max_new` of them (None: no limit), the copy ending where that budget does. Returns the node of the copy's
        last token.
        """
        node, added = 0, 0
        for token in copy.tolist():
            child = next((c for c in keep if parents[c] == node and int(tokens[c]) == token), None)
            if child is None and max_new is not None and added >= max_new:
                break
            if child is None:
                added += 1
                tokens.append(copy.new_tensor(token))
                parents.append(node)
                depths.append(depths[node] + 1)
                child = len(tokens) - 1
                keep.append(child)
            node = child
        return node

    # ------------------------------------------------------------------ verification

    def _processed_scores(self, sequence: torch.LongTensor, tree: DraftTree, logits: torch.Tensor) -> torch.Tensor:
        """The call's logits processors on each node's logits, with the node's own context (sequence + path)."""
        if not self.logits_processor:
            return logits
        paths: list[list[int]] = []
        for node, parent in enumerate(tree.parents.tolist()):
            paths.append([] if parent < 0 else paths[parent] + [node])
        scores = torch.empty_like(logits)
        for level in range(int(tree.depths.max()) + 1):
            nodes = (tree.depths == level).nonzero().flatten()
            path_tokens = torch.stack([tree.tokens[paths[n]] for n in nodes.tolist()]) if level else None
            context = sequence.expand(nodes.numel(), -1)
            if path_tokens is not None:
                context = torch.cat([context, path_tokens], dim=1)
            scores[nodes] = self.logits_processor(context, logits[nodes])
        return scores

    def verify(self, sequence: torch.LongTensor, tree: DraftTree) -> tuple[list[int], list[int], torch.Tensor]:
        """One target forward over the tree; returns the accepted path (node indices, root first), the new tokens
        (accepted children, then the target's own next token) and the processed scores that chose each."""
        past_length = self.target_cache.get_seq_length()
        dtype = next(self.target.parameters()).dtype
        allowed = torch.ones(len(tree), past_length + len(tree), dtype=torch.bool, device=sequence.device)
        allowed[:, past_length:] = tree.ancestor_mask()
        out = self.target(
            input_ids=tree.tokens.unsqueeze(0),
            position_ids=(tree.depths + past_length).unsqueeze(0),
            attention_mask=additive_attention_mask(allowed, dtype)[None, None],
            use_cache=True,
            **cache_kwargs(self.target_cache),
        )
        raw = out.logits[0].float()
        scores = self._processed_scores(sequence, tree, raw)
        probs = scores.softmax(dim=-1) if self.do_sample else None
        children = tree.children()
        path, new_tokens, chosen_by = [0], [], []
        node = 0
        while True:
            candidates = [int(tree.tokens[child]) for child in children[node]]
            if self.do_sample:
                accepted, token = sample_among_candidates(probs[node], candidates)
            else:
                token = int(scores[node].argmax())
                accepted = candidates.index(token) if token in candidates else None
            new_tokens.append(token)
            chosen_by.append(node)
            if accepted is None:
                break
            node = children[node][accepted]
            path.append(node)
        return path, new_tokens, scores[chosen_by]

    def commit(self, tree: DraftTree, path: list[int]) -> None:
        """Compact the target's KV cache and the recorded features (fused ones too) to the accepted path of the
        verified `tree`.

        Only the tree's block at the end moves: the accepted nodes are gathered to its front (a no-op when they
        already are, e.g. a chain-shaped round) and the rest is cropped, so a round copies `len(tree)` cache entries
        per layer, not the whole cache.
        """
        past_length = self.target_cache.get_seq_length() - len(tree)
        rejected = len(tree) - len(path)
        source = None
        if path != list(range(len(path))):
            source = torch.tensor(path, device=self.recorder.features.device) + past_length
            for layer in self.target_cache.layers:
                for tensor in (layer.keys, layer.values):
                    tensor[..., past_length : past_length + len(path), :] = tensor.index_select(
                        -2, source.to(tensor.device)
                    )
        if rejected:
            self.target_cache.crop(-rejected)
        self.recorder.compact(past_length, source, rejected)

    # ------------------------------------------------------------------ loop

    def generate(
        self,
        input_ids: torch.LongTensor,
        stopping_criteria: StoppingCriteriaList,
        streamer: BaseStreamer | None = None,
    ) -> GenerateDecoderOnlyOutput | torch.LongTensor:
        config = self.generation_config
        want_scores = bool(config.return_dict_in_generate and config.output_scores)
        all_scores: list[torch.Tensor] = []
        if streamer is not None:
            streamer.put(input_ids.cpu())
        self.recorder.arm()
        out = self.target(input_ids=input_ids, use_cache=True, logits_to_keep=1, **cache_kwargs(self.target_cache))
        scores = self.logits_processor(input_ids, out.logits[:, -1].float())
        if self.do_sample:
            token = torch.multinomial(scores.softmax(dim=-1), 1)
        else:
            token = scores.argmax(dim=-1, keepdim=True)
        sequence = torch.cat([input_ids, token], dim=1)
        all_scores.append(scores)
        if streamer is not None:
            streamer.put(token.cpu())
        finished = bool(stopping_criteria(sequence, scores).all())
        while not finished:
            budget = config.max_length - sequence.shape[1]
            most = max(budget - 1, 0)  # a round adds its accepted path and the target's own token
            tree = self.build_tree(sequence, depth=min(self.depth, most), max_copy=most)
            path, new_tokens, token_scores = self.verify(sequence, tree)
            self.rounds += 1
            self.drafted += len(tree) - 1
            self.accepted += len(path) - 1
            self.copy_streak = self.copy_streak + 1 if tree.copy_tail > 0 and path[-1] == tree.copy_tail else 0
            self.commit(tree, path)
            emitted = []
            for position, token in enumerate(new_tokens):
                sequence = torch.cat([sequence, sequence.new_tensor([[token]])], dim=1)
                emitted.append(token)
                all_scores.append(token_scores[position : position + 1])
                if bool(stopping_criteria(sequence, token_scores[position : position + 1]).all()):
                    finished = True
                    break
            if streamer is not None:
                streamer.put(torch.tensor(emitted))
        if streamer is not None:
            streamer.end()
        if config.return_dict_in_generate:
            return GenerateDecoderOnlyOutput(
                sequences=sequence,
                scores=tuple(all_scores) if want_scores else None,
                **cache_kwargs(self.target_cache if config.use_cache else None),
            )
        return sequence


_UNSUPPORTED_OUTPUTS = ("output_attentions", "output_hidden_states", "output_logits")
TREE_SETTINGS = (
    "tree_total_tokens",
    "tree_depth",
    "tree_top_k",
    "tree_confidence_threshold",
    "tree_unmatched_copy_tokens",
)
_FLOAT_SETTINGS = ("tree_confidence_threshold",)


def tree_settings(drafter: CoralDrafter, **overrides: float | None) -> dict[str, float]:
    """The tree a generation uses: each override, else the drafter's generation config, else its config.

    A drafter's saved `generation_config.json` may predate the tree fields; its `config.json` always has them
    (a `config.json` that predates a field loads with its default).
    """
    settings = {}
    for name in TREE_SETTINGS:
        for value in (
            overrides.get(name),
            getattr(drafter.generation_config, name, None),
            getattr(drafter.config, name),
        ):
            if value is not None:
                settings[name] = float(value) if name in _FLOAT_SETTINGS else int(value)
                break
    return settings


def tree_generate(
    model: torch.nn.Module,
    input_ids: torch.LongTensor,
    logits_processor: LogitsProcessorList,
    stopping_criteria: StoppingCriteriaList,
    generation_config: GenerationConfig,
    synced_gpus: bool = False,
    drafter: CoralDrafter | None = None,
    tree_total_tokens: int | None = None,
    tree_depth: int | None = None,
    tree_top_k: int | None = None,
    tree_confidence_threshold: float | None = None,
    tree_unmatched_copy_tokens: int | None = None,
    tree_streamer: BaseStreamer | None = None,
    **model_kwargs: Any,
) -> GenerateDecoderOnlyOutput | torch.LongTensor:
    """Tree decoding with a CORAL drafter: `target.generate(**inputs, custom_generate=tree_generate, drafter=d)`.

    transformers calls this with the prepared logits processors, stopping criteria and generation config, so
    sampling settings, `max_new_tokens`, EOS and custom `stopping_criteria` behave as in plain `generate`.

    Args:
        model: the target (passed by `generate`).
        drafter: a [`CoralDrafter`] attached to `model`.
        tree_total_tokens, tree_depth, tree_top_k, tree_confidence_threshold, tree_unmatched_copy_tokens: override
            the drafter's `generation_config` tree settings for this call: tokens verified per round (root
            included), levels, children per expanded node, the path probability a level's likeliest frontier node
            needs for it to be expanded, and the longest copy branch that does not start with the drafter's top-1.
        tree_streamer: a streamer (`TextStreamer`, ...). transformers does not hand `streamer=` to a
            `custom_generate` callable, so pass it under this name.

    Stop strings: transformers does not hand the `tokenizer` to a `custom_generate` callable either, so pass
    `stopping_criteria=StoppingCriteriaList([StopStringCriteria(tokenizer, ["..."])])` instead of `stop_strings`.
    """
    if drafter is None:
        raise TypeError(
            "tree_generate needs the drafter: `target.generate(**inputs, custom_generate=coral_hf.tree_generate, "
            "drafter=drafter)`."
        )
    if drafter.target is None or unwrap_target(drafter.target) is not unwrap_target(model):
        raise RuntimeError(
            "This CoralDrafter is not attached to the model calling generate(): attach it first "
            "(`drafter.attach(model)` or `load_drafter(..., target=model)`)."
        )
    if generation_config.num_beams != 1 or (generation_config.num_return_sequences or 1) != 1:
        raise ValueError(
            "Tree decoding supports greedy decoding and sampling with one sequence: got "
            f"num_beams={generation_config.num_beams}, num_return_sequences={generation_config.num_return_sequences}."
        )
    if input_ids.shape[0] != 1:
        raise ValueError(f"Tree decoding supports batch size 1 only, got {input_ids.shape[0]}.")
    for name in _UNSUPPORTED_OUTPUTS:
        if generation_config.return_dict_in_generate and getattr(generation_config, name, False):
            raise ValueError(f"Tree decoding does not return {name.removeprefix('output_')}; drop {name}=True.")
    past = passed_cache(model_kwargs)
    if past is not None and past.get_seq_length() > 0:
        raise ValueError(f"Tree decoding starts from an empty cache; drop {CACHE_KWARG}.")
    attention_mask = model_kwargs.get("attention_mask")
    if attention_mask is not None and not bool(attention_mask.all()):
        raise ValueError("Tree decoding does not support padded inputs (attention_mask with zeros).")
    window = getattr(unwrap_target(model).config.get_text_config(), "sliding_window", None)
    if window is not None and generation_config.max_length > window:
        raise ValueError(
            f"Tree decoding does not apply sliding-window attention: max_length {generation_config.max_length} "
            f"exceeds the target's sliding_window {window}."
        )
    warn_if_slow_verification(model)
    settings = tree_settings(
        drafter,
        tree_total_tokens=tree_total_tokens,
        tree_depth=tree_depth,
        tree_top_k=tree_top_k,
        tree_confidence_threshold=tree_confidence_threshold,
        tree_unmatched_copy_tokens=tree_unmatched_copy_tokens,
    )
    decoder = TreeDecoder(
        model,
        drafter,
        generation_config,
        logits_processor,
        total_tokens=settings["tree_total_tokens"],
        depth=settings["tree_depth"],
        top_k=settings["tree_top_k"],
        confidence_threshold=settings["tree_confidence_threshold"],
        unmatched_copy_tokens=settings["tree_unmatched_copy_tokens"],
    )
    drafter.__dict__["_candidate_generator"] = decoder
    return decoder.generate(input_ids, stopping_criteria, streamer=tree_streamer)


__all__ = [
    "TREE_SETTINGS",
    "DraftTree",
    "TreeDecoder",
    "sample_among_candidates",
    "tree_ancestor_mask",
    "tree_generate",
    "tree_settings",
]
