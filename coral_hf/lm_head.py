"""CORAL's lighter drafter head: the target's LM-head rows in G contiguous groups, k of them active per draft step.

With a large vocabulary the LM head dominates the cost of a draft step (SmolLM2-135M: one decoder layer is ~4M
multiply-adds per token, the 49152 x 576 head ~28M). CORAL permutes the vocabulary once so that every group is a
contiguous block of rows of a permuted copy of the head, and a small router picks the k most likely groups for each
predicted feature `h`: `p_router = softmax(W2(act(W1 h) + h))`. Only the rows of those groups are multiplied; all
other logits are `-inf`, so the drafter samples from (and reports) the renormalised distribution over the active
groups, and the target's verification keeps generation lossless.

This module holds the pieces that do not depend on the drafter class:

- vocabulary permutations (`contiguous`, `frequency`, `cluster`) and the static frequency shortlist baseline;
- [`GroupRouter`] and [`GroupedLMHead`], the drafter's router, permutation and shortlist;
- coverage measures (`oracle_group_coverage`, `shortlist_coverage`).

Draft-step timing lives in `coral_hf.eval.timing`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers.activations import ACT2FN

from .configuration_coral import GROUP_STRATEGIES, CoralConfig
from .packed_linear import PackedLinear, pack_weight, packable_dtype, packed_linear

# ---------------------------------------------------------------------------------------------- vocabulary groups


def group_offsets(vocab_size: int, num_groups: int) -> list[int]:
    """Start row of each group in the permuted vocabulary, plus `vocab_size` at the end (`num_groups + 1` values).

    Groups are as equal as possible (the first `vocab_size % num_groups` groups hold one row more), so the cost of a
    routed step is the same whichever k groups are active, and the grouping is fully described by the permutation.
    """
    if not 1 <= num_groups <= vocab_size:
        raise ValueError(f"num_groups must be in [1, vocab_size={vocab_size}], got {num_groups}.")
    size, extra = divmod(vocab_size, num_groups)
    return [group * size + min(group, extra) for group in range(num_groups + 1)]


def token_frequencies(
    sequences: Iterable[Sequence[int] | torch.Tensor],
    vocab_size: int,
    masks: Iterable[Sequence[int] | torch.Tensor] | None = None,
) -> torch.Tensor:
    """Count token ids over `sequences` (e.g. the `input_ids` of a training set); returns int64 counts `[vocab]`.

    Pass the matching `masks` (e.g. the `loss_mask` column) to count only the tokens the drafter predicts: the
    assistant's tokens, not the prompts'.
    """
    counts = torch.zeros(vocab_size, dtype=torch.long)
    pairs = zip(sequences, masks, strict=True) if masks is not None else ((ids, None) for ids in sequences)
    for sequence, mask in pairs:
        ids = torch.as_tensor(sequence, dtype=torch.long).flatten()
        if mask is not None:
            ids = ids[torch.as_tensor(mask).flatten().bool()]
        counts += torch.bincount(ids, minlength=vocab_size)
    return counts


def token_groups(permutation: torch.Tensor, num_groups: int) -> torch.LongTensor:
    """`[vocab]` group index of every token id, for `permutation` cut into `num_groups` groups (`group_offsets`)."""
    offsets = group_offsets(permutation.numel(), num_groups)
    sizes = torch.tensor(offsets, device=permutation.device).diff()
    groups = torch.repeat_interleave(torch.arange(num_groups, device=permutation.device), sizes)
    return torch.empty_like(groups).scatter_(0, permutation.long(), groups)


def contiguous_permutation(vocab_size: int) -> torch.LongTensor:
    """The identity: group g holds token ids `offsets[g]:offsets[g + 1]` in id order."""
    return torch.arange(vocab_size)


def frequency_permutation(token_counts: torch.Tensor) -> torch.LongTensor:
    """Token ids sorted by decreasing frequency (ties by id), so frequent tokens share the first groups.

    Chunking this order concentrates probability mass into as few groups as possible: the first k groups are exactly
    the static frequency shortlist of k groups' worth of rows, so a router that always picks them reproduces the
    shortlist baseline, and any better (context-dependent) choice of groups improves on it.
    """
    order = torch.sort(token_counts.flatten(), descending=True, stable=True).indices
    return order.long()


def frequency_shortlist(token_counts: torch.Tensor, size: int) -> torch.LongTensor:
    """The `size` most frequent token ids (ties by id), sorted by id: a static draft vocabulary (FR-Spec, EAGLE-3)."""
    if not 1 <= size <= token_counts.numel():
        raise ValueError(f"shortlist size must be in [1, {token_counts.numel()}], got {size}.")
    return frequency_permutation(token_counts)[:size].sort().values


@torch.no_grad()
def cluster_permutation(weight: torch.Tensor, num_groups: int, iterations: int = 8, seed: int = 0) -> torch.LongTensor:
    """Group the LM-head rows by balanced spherical k-means; returns token ids sorted by cluster (ties by id).

    Rows pointing in similar directions get similar logits for any feature, so the target's probability mass at a
    position tends to fall into few clusters, and the router's task (which clusters align with `h`) is smooth.
    Clusters have exactly the sizes of [`group_offsets`] (balanced assignment: every token proposes its most similar
    centroid with room left, each centroid keeps its most similar proposals), so every group costs the same.
    Deterministic for a given `seed`. Each iteration costs one `[vocab, hidden] x [hidden, num_groups]` product: on
    one CPU core the whole clustering of SmolLM2's 49152 x 576 head takes about 1 s for 64 groups, 3 s for 256.
    """
    rows = nn.functional.normalize(weight.detach().float(), dim=-1)
    vocab_size = rows.shape[0]
    offsets = group_offsets(vocab_size, num_groups)
    capacity = torch.tensor(offsets, device=rows.device).diff()
    generator = torch.Generator().manual_seed(seed)
    centroids = rows[torch.randperm(vocab_size, generator=generator)[:num_groups].to(rows.device)]
    for _ in range(iterations):
        assignment = _balanced_assignment(rows @ centroids.T, capacity)
        sums = torch.zeros_like(centroids).index_add_(0, assignment, rows)
        centroids = nn.functional.normalize(sums, dim=-1)
    assignment = _balanced_assignment(rows @ centroids.T, capacity)
    return torch.sort(assignment, stable=True).indices.cpu()


def _balanced_assignment(scores: torch.Tensor, capacity: torch.Tensor) -> torch.LongTensor:
    """Assign each row of `scores [n, groups]` to a group, at most `capacity[g]` rows per group (sum >= n).

    Rounds of proposals: each unassigned row proposes its best group that still has room, and each group accepts
    its highest-scoring proposals up to its remaining capacity. Every round fills a group or assigns every row.
    """
    num_rows, num_groups = scores.shape
    assignment = torch.full((num_rows,), -1, dtype=torch.long, device=scores.device)
    remaining = capacity.clone()
    pending = torch.arange(num_rows, device=scores.device)
    while pending.numel():
        proposal_scores = scores[pending].masked_fill((remaining == 0)[None, :], float("-inf"))
        best_score, best = proposal_scores.max(dim=-1)
        order = torch.sort(best_score, descending=True, stable=True).indices
        order = order[torch.sort(best[order], stable=True).indices]  # by group, best proposals first
        groups = best[order]
        counts = torch.bincount(groups, minlength=num_groups)
        rank = torch.arange(order.numel(), device=scores.device) - (counts.cumsum(0) - counts)[groups]
        accepted = rank < remaining[groups]
        assignment[pending[order[accepted]]] = groups[accepted]
        remaining -= torch.bincount(groups[accepted], minlength=num_groups)
        pending = pending[order[~accepted]].sort().values
    return assignment


def build_permutation(
    strategy: str,
    vocab_size: int,
    num_groups: int,
    lm_head_weight: torch.Tensor | None = None,
    token_counts: torch.Tensor | None = None,
    seed: int = 0,
) -> torch.LongTensor:
    """The vocabulary permutation of `strategy` (`"contiguous"`, `"frequency"` or `"cluster"`)."""
    if strategy == "contiguous":
        return contiguous_permutation(vocab_size)
    if strategy == "frequency":
        if token_counts is None:
            raise ValueError(
                "group_strategy='frequency' needs token counts: pass `token_counts=coral_hf.lm_head."
                "token_frequencies(dataset['input_ids'], vocab_size, dataset['loss_mask'])`."
            )
        return frequency_permutation(token_counts)
    if strategy == "cluster":
        if lm_head_weight is None:
            raise ValueError("group_strategy='cluster' clusters the target's LM-head rows: attach a target first.")
        return cluster_permutation(lm_head_weight, num_groups, seed=seed)
    raise ValueError(f"Unknown group_strategy {strategy!r}; expected one of {GROUP_STRATEGIES}.")


# ---------------------------------------------------------------------------------------------- router and head


class GroupRouter(nn.Module):
    """Scores the vocabulary groups for a predicted feature: `W2(act(W1 h) + h)` (logits of `p_router`)."""

    def __init__(self, hidden_size: int, num_groups: int, hidden_act: str = "silu"):
        super().__init__()
        self.w1 = nn.Linear(hidden_size, hidden_size)
        self.w2 = nn.Linear(hidden_size, num_groups)
        self.act = ACT2FN[hidden_act]

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.w2(self.act(self.w1(hidden_states)) + hidden_states)

    @torch.no_grad()
    def reset_parameters(self, group_prior: torch.Tensor | None = None) -> None:
        """Start from a context-free choice: `W2 = 0` and its bias the log prior of each group (uniform if None).

        With a frequency prior the untrained router activates the k groups holding the most training mass, the best
        static choice (for the `frequency` permutation, exactly the frequency shortlist); training then makes the
        choice depend on `h`.
        """
        self.w1.reset_parameters()
        self.w2.weight.zero_()
        if group_prior is None:
            self.w2.bias.zero_()
        else:
            prior = group_prior.double() / group_prior.sum().clamp_min(1)
            self.w2.bias.copy_(prior.clamp_min(1e-8).log().to(self.w2.bias.dtype))


@dataclass
class _BoundHead:
    """Copies of the target's LM head that the grouped head reads at draft time (rebuilt, never saved)."""

    key: tuple
    weight: torch.Tensor  # LM-head rows in permuted order: group g is weight[offsets[g]:offsets[g + 1]]
    bias: torch.Tensor | None
    permutation: torch.LongTensor
    group_of_token: torch.LongTensor
    shortlist: torch.LongTensor
    shortlist_weight: torch.Tensor
    shortlist_bias: torch.Tensor | None
    shortlist_packed: torch.Tensor | None  # oneDNN-packed shortlist rows, where the target's head is packed


class GroupedLMHead(nn.Module):
    """The drafter's lighter head: a [`GroupRouter`] over `num_groups` vocabulary groups and a static shortlist.

    Saved with the drafter: the router weights, `permutation` (`permutation[i]` is the token id at row i of the
    permuted head; group g covers rows `group_offsets(vocab, G)[g]:[g + 1]`) and `shortlist` (token ids of the
    static shortlist). Not saved: the permuted copy of the target's LM-head weight, made once when the drafter is
    attached (no copy when the permutation is the identity) and remade if the target's head or the permutation
    changes, so that a draft step slices the rows of its active groups without copying the head.
    """

    def __init__(self, config: CoralConfig):
        super().__init__()
        hidden_act = (config.target_config or {}).get("hidden_act", "silu")
        self.vocab_size = config.target_vocab_size
        self.num_groups = config.num_groups
        self.offsets = group_offsets(self.vocab_size, self.num_groups)
        self.router = GroupRouter(config.target_hidden_size, config.num_groups, hidden_act)
        self.register_buffer("permutation", contiguous_permutation(self.vocab_size))
        self.register_buffer("shortlist", torch.arange(config.shortlist_size))
        self._bound: _BoundHead | None = None

    def __getstate__(self) -> dict:
        # The bound copies of the target's head are rebuilt on the next use; a oneDNN-packed one cannot be copied.
        return {**self.__dict__, "_bound": None}

    @torch.no_grad()
    def set_grouping(self, permutation: torch.Tensor, shortlist: torch.Tensor) -> None:
        """Install a vocabulary permutation and a shortlist (token ids), after checking them."""
        permutation = torch.as_tensor(permutation, dtype=torch.long).flatten()
        if permutation.numel() != self.vocab_size or not torch.equal(
            permutation.sort().values, torch.arange(self.vocab_size)
        ):
            raise ValueError(f"permutation must be a permutation of range({self.vocab_size}).")
        shortlist = torch.as_tensor(shortlist, dtype=torch.long).flatten()
        if shortlist.numel() != self.shortlist.numel() or shortlist.unique().numel() != shortlist.numel():
            raise ValueError(f"shortlist must hold {self.shortlist.numel()} distinct token ids.")
        if shortlist.min() < 0 or shortlist.max() >= self.vocab_size:
            raise ValueError(f"shortlist ids must be in range({self.vocab_size}).")
        self.permutation.copy_(permutation)
        self.shortlist.copy_(shortlist)
        self._bound = None

    def group_of_token(self) -> torch.LongTensor:
        """`[vocab]` group index of every token id (on the permutation's device)."""
        return token_groups(self.permutation, self.num_groups)

    def group_mass(self, probs: torch.Tensor) -> torch.Tensor:
        """Sum token probabilities `[..., vocab]` per group: `[..., num_groups]`."""
        index = self.group_of_token().to(probs.device).expand(probs.shape)
        return probs.new_zeros(*probs.shape[:-1], self.num_groups).scatter_add_(-1, index, probs)

    def bind(self, lm_head: nn.Module) -> _BoundHead:
        """Make (or reuse) the permuted copy of `lm_head`'s weight; called on attach and before each use.

        The copies are made in the drafter's dtype (its router's) where that is narrower than the head's, so a
        bfloat16 drafter on a float32 target reads half the bytes per draft step; otherwise in the head's dtype.
        Where the target's head has a oneDNN-packed weight (`coral_hf.pack_linear_weights`), the shortlist rows get
        one too (in bfloat16 only where oneDNN supports it on this CPU)."""
        weight = lm_head.weight.detach()
        bias = lm_head.bias.detach() if getattr(lm_head, "bias", None) is not None else None
        drafter_dtype = self.router.w2.weight.dtype
        dtype = drafter_dtype if drafter_dtype.itemsize < weight.dtype.itemsize else weight.dtype
        key = tuple(
            (tensor.data_ptr(), tensor._version, tensor.dtype, tensor.device, tuple(tensor.shape))
            for tensor in (weight, bias, self.permutation, self.shortlist)
            if tensor is not None
        )
        packed = isinstance(lm_head, PackedLinear)
        key = (*key, dtype, packed)
        if self._bound is not None and self._bound.key == key:
            return self._bound
        weight = weight.to(dtype)
        bias = None if bias is None else bias.to(dtype)
        permutation = self.permutation.to(weight.device)
        shortlist = self.shortlist.to(weight.device)
        identity = torch.equal(permutation, torch.arange(self.vocab_size, device=weight.device))
        shortlist_weight = weight[shortlist].contiguous()
        self._bound = _BoundHead(
            key=key,
            weight=weight if identity else weight[permutation].contiguous(),
            bias=None if bias is None else (bias if identity else bias[permutation].contiguous()),
            permutation=permutation,
            group_of_token=self.group_of_token().to(weight.device),
            shortlist=shortlist,
            shortlist_weight=shortlist_weight,
            shortlist_bias=None if bias is None else bias[shortlist].contiguous(),
            shortlist_packed=pack_weight(shortlist_weight) if packed and packable_dtype(dtype) else None,
        )
        return self._bound

    def unbind(self) -> None:
        """Drop the copies of the target's head (the drafter was detached)."""
        self._bound = None

    def shortlist_values(self, hidden_states: torch.Tensor, lm_head: nn.Module) -> torch.Tensor:
        """Logits `[..., shortlist_size]` of the shortlist's tokens only (in the head's dtype), column j for token
        `shortlist[j]`: the draft vocabulary that training with `logit_vocab="shortlist"` works on."""
        bound = self.bind(lm_head)
        features = hidden_states.to(bound.weight.dtype)
        return packed_linear(features, bound.shortlist_weight, bound.shortlist_packed, bound.shortlist_bias)

    def shortlist_logits(self, hidden_states: torch.Tensor, lm_head: nn.Module) -> torch.Tensor:
        """Full-vocabulary float32 logits: the LM head on the shortlist's rows, `-inf` elsewhere."""
        bound = self.bind(lm_head)
        values = self.shortlist_values(hidden_states, lm_head)
        logits = values.new_full((*values.shape[:-1], self.vocab_size), float("-inf"), dtype=torch.float32)
        return logits.index_copy_(-1, bound.shortlist, values.float())

    def routed_logits(self, hidden_states: torch.Tensor, lm_head: nn.Module, active_groups: int) -> torch.Tensor:
        """Full-vocabulary float32 logits: the LM head on the router's top-`active_groups` groups, `-inf` elsewhere.

        A single feature (a draft step) multiplies only the rows of its active groups, contiguous slices of the
        permuted head (adjacent active groups are one slice), and scatters them into a `-inf` row. Several features
        (evaluation, training metrics) use the full head and mask each row's inactive groups; both give the same
        logits.
        """
        bound = self.bind(lm_head)
        active = self.router(hidden_states.to(self.router.w2.weight.dtype)).topk(active_groups, dim=-1).indices
        features = hidden_states.to(bound.weight.dtype)
        if features[..., 0].numel() == 1:
            feature = features.reshape(-1)
            logits = torch.full((self.vocab_size,), float("-inf"), device=feature.device)
            for first, last in _runs(sorted(active.flatten().tolist())):
                rows = slice(self.offsets[first], self.offsets[last + 1])
                bias = None if bound.bias is None else bound.bias[rows]
                values = nn.functional.linear(feature, bound.weight[rows], bias)
                logits.index_copy_(0, bound.permutation[rows], values.float())
            return logits.view(*hidden_states.shape[:-1], self.vocab_size)
        bias = lm_head.bias.detach() if getattr(lm_head, "bias", None) is not None else None
        logits = nn.functional.linear(features, lm_head.weight.detach(), bias).float()
        active_mask = torch.zeros(*active.shape[:-1], self.num_groups, dtype=torch.bool, device=logits.device)
        active_mask.scatter_(-1, active.to(logits.device), True)
        return logits.masked_fill(~active_mask[..., bound.group_of_token], float("-inf"))


def _runs(groups: list[int]) -> list[tuple[int, int]]:
    """Sorted group indices as `(first, last)` runs of consecutive groups: `[1, 2, 3, 7]` -> `[(1, 3), (7, 7)]`."""
    runs: list[tuple[int, int]] = []
    for group in groups:
        if runs and runs[-1][1] == group - 1:
            runs[-1] = (runs[-1][0], group)
        else:
            runs.append((group, group))
    return runs


# ---------------------------------------------------------------------------------------------- measurement


@torch.no_grad()
def oracle_group_coverage(
    probs: torch.Tensor, group_of_token: torch.Tensor, num_groups: int, active_groups: int
) -> dict[str, float]:
    """How well k groups *can* cover the target: an oracle router activates the k groups of most target mass.

    Args:
        probs: `[positions, vocab]` target next-token distributions.
        group_of_token: `[vocab]` group of each token id (`token_groups(permutation, num_groups)`).
        num_groups, active_groups: G and k.

    Returns:
        Means over positions: `top1` (the target's argmax token lies in the chosen groups) and `mass` (target
        probability inside them, the quantity that bounds speculative-sampling acceptance).
    """
    index = group_of_token.to(probs.device).expand(probs.shape)
    mass = probs.new_zeros(probs.shape[0], num_groups).scatter_add_(-1, index, probs)
    chosen = mass.topk(active_groups, dim=-1)
    top1_group = group_of_token.to(probs.device)[probs.argmax(dim=-1)]
    top1 = (chosen.indices == top1_group[:, None]).any(dim=-1)
    return {"top1": top1.float().mean().item(), "mass": chosen.values.sum(dim=-1).mean().item()}


@torch.no_grad()
def shortlist_coverage(probs: torch.Tensor, shortlist: torch.Tensor) -> dict[str, float]:
    """Means over positions of `top1` (target argmax in the shortlist) and `mass` (target probability inside it)."""
    shortlist = shortlist.to(probs.device)
    inside = torch.zeros(probs.shape[-1], dtype=torch.bool, device=probs.device)
    inside[shortlist] = True
    return {
        "top1": inside[probs.argmax(dim=-1)].float().mean().item(),
        "mass": probs[:, shortlist].sum(dim=-1).mean().item(),
    }
