"""CoralCandidateGenerator: drafts candidate tokens from the target's own features for assisted decoding."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from transformers import GenerationConfig
from transformers.cache_utils import DynamicCache
from transformers.generation.candidate_generator import CandidateGenerator
from transformers.generation.logits_process import LogitsProcessorList

if TYPE_CHECKING:
    from .modeling_coral import CoralDrafter


class CoralCandidateGenerator(CandidateGenerator):
    """Drafts up to `max_new_tokens` tokens per round with a [`CoralDrafter`] (or copies up to
    `prompt_lookup_num_tokens`) and returns their logits.

    Each round the drafter first catches up on the positions the target has verified since the last round, using
    the target's real features (read by the drafter's [`TargetFeatureRecorder`]), then drafts autoregressively
    on its own predicted features. Its KV cache is rolled back to the verified prefix after every round, so draft
    positions are always recomputed from real features once the target has seen them (as in EAGLE).

    The returned logits are exactly the (processed) distribution each draft token was drawn from, which is what
    transformers' speculative sampling needs to stay lossless.

    **Hybrid proposals (drafter + prompt lookup).** When `drafter.generation_config.prompt_lookup_num_tokens` is
    set, each round also looks for the earlier occurrences of the context's longest repeated suffix (up to
    `max_matching_ngram_size` tokens, see [`lookup_ngram`]) and proposes the tokens that most often followed them
    (see [`lookup_continuation`]), copied from the context, instead of drafting, when the copy is the likelier
    candidate: its first token is the drafter's own top-1, or the drafter's confidence in its top-1 is below
    `copy_confidence`. A copied token is a deterministic proposal, so its logits are one-hot (q = 1 on the token),
    which keeps speculative sampling exact. After
    `copy_only_after` consecutive copies accepted in full, a round that finds a copy proposes it without running the
    drafter at all; the drafter catches up on the skipped positions in one forward when it next drafts.

    **Datastore.** With a datastore (`drafter.datastore`, see [`NgramDatastore`]), the continuation that usually
    followed the context's longest suffix in the target's earlier answers (up to `datastore_tokens`) is a second
    candidate, proposed by the same rule when the context's copy is not (the copy comes first when both qualify).

    Args:
        drafter: the attached drafter.
        generation_config: the target's generation config for this call (sampling settings, EOS, confidence).
        logits_processor: the target's logits processors (temperature, top-k/p, penalties...), applied to the
            drafter's logits so that q and p are processed alike.
    """

    def __init__(
        self,
        drafter: CoralDrafter,
        generation_config: GenerationConfig,
        logits_processor: list | None = None,
    ):
        self.drafter = drafter
        self.recorder = drafter.feature_recorder
        self.cache = DynamicCache()
        self.handle = DraftHandle(self.cache)
        self.logits_processor = LogitsProcessorList(logits_processor or [])
        self.do_sample = bool(generation_config.do_sample)
        self.confidence_threshold = float(generation_config.assistant_confidence_threshold or 0.0)
        self.num_draft_tokens = int(drafter.generation_config.num_assistant_tokens)
        eos = generation_config.eos_token_id
        self.eos_token_ids = set([eos] if isinstance(eos, int) else (eos or []))
        lookup_tokens = getattr(drafter.generation_config, "prompt_lookup_num_tokens", None)
        self.lookup_tokens = int(lookup_tokens or 0)
        self.lookup_ngram = lookup_ngram(drafter)
        self.copy_confidence = float(getattr(drafter.generation_config, "copy_confidence", None) or 0.0)
        self.copy_only_after = copy_only_after(drafter)
        self.copy_only_tokens = copy_only_tokens(drafter, self.lookup_tokens)
        self.datastore = drafter.datastore
        settings = datastore_settings(drafter)
        self.datastore_tokens, self.datastore_min_ngram = settings["datastore_tokens"], settings["datastore_min_ngram"]
        self.copy_streak = 0  # consecutive rounds whose copy the target accepted in full
        self.copy_end: int | None = None  # sequence length the last round's copy reached, None when it drafted
        self.rounds = 0
        self.drafted = 0
        self.copied_rounds = 0
        self.copy_only_rounds = 0
        self.datastore_rounds = 0
        self.recorder.arm()

    def stats(self) -> dict[str, int]:
        return {
            "rounds": self.rounds,
            "drafted": self.drafted,
            "copied_rounds": self.copied_rounds,
            "copy_only_rounds": self.copy_only_rounds,
            "datastore_rounds": self.datastore_rounds,
        }

    def get_candidates(
        self, input_ids: torch.LongTensor, max_new_tokens: int | None = None, **kwargs: Any
    ) -> tuple[torch.LongTensor, torch.FloatTensor]:
        """Return `input_ids` extended by the draft and the `[1, draft_length, vocab]` logits it was drawn from."""
        num_tokens = self.num_draft_tokens if max_new_tokens is None else min(self.num_draft_tokens, max_new_tokens)
        num_tokens = max(num_tokens, 1)
        self.rounds += 1
        features = self.recorder.features
        if features is None and self.rounds > 1:
            # The target has verified a round, yet the hooks on the attached target saw no forward: another model
            # is generating with this drafter, whose drafts would then be blind guesses.
            raise RuntimeError(
                "This CoralDrafter is attached to another model than the one calling generate(): attach it to the "
                "generating model first (`drafter.attach(model)` or `load_drafter(..., target=model)`)."
            )
        if features is None:
            # First round: the target has not run yet, so there is no feature to draft from. Propose one
            # deterministic token (q is one-hot, which keeps speculative sampling exact); the target's forward on
            # the prompt then yields its own token and the prompt features.
            return self._placeholder_draft(input_ids)
        # The target accepted the last copy in full when the sequence now extends past it (the copy plus the
        # target's own next token); transformers reports acceptance to its own wrapper, not to this generator.
        accepted_copy = self.copy_end is not None and input_ids.shape[1] > self.copy_end
        self.copy_streak = self.copy_streak + 1 if accepted_copy else 0
        self.copy_end = None
        in_streak = 0 < self.copy_only_after <= self.copy_streak  # a copy found this round is proposed alone
        # A copy costs no drafter work, so it may be longer than the draft length: up to `prompt_lookup_num_tokens`
        # (`copy_only_tokens` in a streak).
        # transformers asks for fewer tokens than the draft length only at the end of the length budget, which then
        # caps the copy too; otherwise it crops whatever the target accepts past its `max_length` or an EOS.
        copy_tokens = self.copy_only_tokens if in_streak else self.lookup_tokens
        stored_tokens = self.datastore_tokens
        if num_tokens < self.num_draft_tokens:
            copy_tokens, stored_tokens = min(copy_tokens, num_tokens), min(stored_tokens, num_tokens)
        sequence, logits = self._draft(input_ids, num_tokens, copy_tokens, in_streak, stored_tokens)
        self.drafted += logits.shape[1]
        return sequence, logits

    def _one_hot_logits(self, tokens: torch.LongTensor) -> torch.FloatTensor:
        """`[1, n, vocab]` logits of deterministic proposals: 0 at each token, -inf elsewhere (q is one-hot)."""
        vocab_size = self.drafter.config.target_vocab_size
        logits = torch.full((1, tokens.shape[-1], vocab_size), float("-inf"), device=tokens.device)
        return logits.scatter_(-1, tokens.view(1, -1, 1), 0.0)

    def _placeholder_draft(self, input_ids: torch.LongTensor) -> tuple[torch.LongTensor, torch.FloatTensor]:
        token = input_ids[:, -1:]
        return torch.cat([input_ids, token], dim=1), self._one_hot_logits(token)

    def _copied(self, input_ids: torch.LongTensor, copy: torch.LongTensor) -> tuple[torch.LongTensor, torch.Tensor]:
        copy = copy.unsqueeze(0)
        self.copied_rounds += 1  # the drafter's cache holds verified positions only: nothing to roll back
        sequence = torch.cat([input_ids, copy], dim=1)
        self.copy_end = sequence.shape[1]
        return sequence, self._one_hot_logits(copy)

    def _proposal(
        self,
        input_ids: torch.LongTensor,
        first_logits: torch.FloatTensor,
        copy: torch.LongTensor | None,
        stored_tokens: int,
    ) -> torch.LongTensor | None:
        """The copy or datastore continuation to propose instead of drafting, or None to draft.

        The first candidate whose first token is the drafter's top-1 wins (the context's copy before the datastore's,
        which is looked up only when the copy does not qualify); failing that, when the drafter's confidence is below
        `copy_confidence`, the first candidate there is.
        """
        use_datastore = self.datastore is not None and stored_tokens > 0
        if copy is None and not use_datastore:
            return None
        confidence, top1 = first_logits.softmax(dim=-1).max(dim=-1)
        if copy is not None and int(copy[0]) == int(top1):
            return copy
        stored = None
        if use_datastore:
            stored = self.datastore.lookup(input_ids[0], stored_tokens, self.datastore_min_ngram)
        if stored is not None and int(stored[0]) == int(top1):
            self.datastore_rounds += 1
            return stored
        if float(confidence) < self.copy_confidence:
            self.datastore_rounds += int(copy is None and stored is not None)
            return copy if copy is not None else stored
        return None

    def _draft(
        self, input_ids: torch.LongTensor, num_tokens: int, copy_tokens: int, copy_only: bool, stored_tokens: int
    ) -> tuple[torch.LongTensor, torch.FloatTensor]:
        offset = self.recorder.offset
        verified = input_ids.shape[1] - 1  # positions 0..n-2 have target features
        copy = lookup_continuation(input_ids[0], self.lookup_ngram, copy_tokens) if self.lookup_tokens else None
        if copy is not None and copy_only:
            self.copy_only_rounds += 1  # a streak of accepted copies: no drafter forward this round
            return self._copied(input_ids, copy)
        predicted = catch_up(self.drafter, self.cache, input_ids)
        sequence = input_ids
        first_logits = self.logits_processor(sequence, self.drafter.compute_logits(predicted[:, -1]))
        proposal = self._proposal(input_ids, first_logits, copy, stored_tokens)
        if proposal is not None:
            return self._copied(input_ids, proposal)
        all_logits = []
        for step in range(num_tokens):
            if step == 0:
                logits = first_logits
            else:
                logits = self.logits_processor(sequence, self.drafter.compute_logits(predicted[:, -1]))
            if self.do_sample:
                probs = logits.softmax(dim=-1)
                token = torch.multinomial(probs, num_samples=1)
            else:
                token = logits.argmax(dim=-1, keepdim=True)
            sequence = torch.cat([sequence, token], dim=1)
            all_logits.append(logits)
            if step == num_tokens - 1 or token.item() in self.eos_token_ids:
                break
            if self.confidence_threshold > 0:
                confidence = logits.softmax(dim=-1)[0, token[0, 0]].item()
                if confidence < self.confidence_threshold:
                    break
            position = verified + step
            predicted = self.drafter(
                input_ids=token,
                hidden_states=predicted,
                position_ids=torch.tensor([[position]], device=input_ids.device),
                past_key_values=self.cache,
                use_cache=True,
            ).last_hidden_state
        # Keep only positions computed from real target features; the target verifies the rest next.
        self.cache.crop(verified - offset - self.cache.get_seq_length())
        return sequence, torch.stack(all_logits, dim=1)


class DraftHandle:
    """What the drafter hands transformers as its cache between rounds of assisted decoding.

    transformers keeps the assistant's cache and crops it before each round to fit the accepted text (since 5.24 by
    its own count of the last round's rejected tokens), while the drafter's cache holds only positions computed from
    the target's real features and is cropped by its generator. So transformers gets this handle, whose `crop` does
    nothing, and hands it back to identify the generation; its length is the cache's.
    """

    def __init__(self, cache: DynamicCache):
        self._cache = cache

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return self._cache.get_seq_length(layer_idx)

    def crop(self, max_length: int) -> None:
        """Leave the drafter's cache to its generator."""


def catch_up(drafter: CoralDrafter, cache: DynamicCache, sequence: torch.LongTensor) -> torch.Tensor:
    """Feed the drafter the positions the target verified since the drafter's cache ends, on the target's real
    features (read by the drafter's recorder, with the fused layers' outputs for a drafter that fuses them), and
    return its prediction after the last one: `[1, 1, hidden]`.

    `sequence` ends with the token the target chose last, which has no feature yet: positions up to
    `len(sequence) - 2` are verified, and the drafter's input at position p is (token p + 1, feature p).
    """
    recorder = drafter.feature_recorder
    features, offset = recorder.features, recorder.offset
    verified = sequence.shape[1] - 1
    start = offset + cache.get_seq_length()
    fused = recorder.fused_features
    out = drafter(
        input_ids=sequence[:, start + 1 : verified + 1],
        hidden_states=features[:, start - offset : verified - offset],
        fused_hidden_states=None if fused is None else fused[:, start - offset : verified - offset],
        position_ids=torch.arange(start, verified, device=sequence.device).unsqueeze(0),
        past_key_values=cache,
        use_cache=True,
    )
    return out.last_hidden_state[:, -1:]


def copy_only_after(drafter: CoralDrafter) -> int:
    """The drafter's `copy_only_after` (see [`CoralConfig`]): its generation config's, else its config's (drafters
    saved before the setting existed carry it in neither file and get the config default)."""
    value = getattr(drafter.generation_config, "copy_only_after", None)
    return int(drafter.config.copy_only_after if value is None else value)


def copy_only_tokens(drafter: CoralDrafter, lookup_tokens: int) -> int:
    """The drafter's `copy_only_tokens` (see [`CoralConfig`]) for copies of `lookup_tokens`: its generation config's,
    else its config's, else `lookup_tokens` (also for drafters saved before the setting existed); 0 when
    `lookup_tokens` is 0 (no copies)."""
    if not lookup_tokens:
        return 0
    value = getattr(drafter.generation_config, "copy_only_tokens", None)
    if value is None:
        value = getattr(drafter.config, "copy_only_tokens", None)
    return int(lookup_tokens if value is None else value)


def lookup_ngram(drafter: CoralDrafter) -> int:
    """The longest context suffix a copy matches (see [`lookup_continuation`]): the drafter's generation config's
    `max_matching_ngram_size`, else its config's `prompt_lookup_ngram` (a saved generation config may predate it)."""
    value = getattr(drafter.generation_config, "max_matching_ngram_size", None)
    return int(drafter.config.prompt_lookup_ngram if value is None else value)


def datastore_settings(drafter: CoralDrafter) -> dict[str, int]:
    """`datastore_tokens` and `datastore_min_ngram` from the drafter's generation config, else its config (a saved
    generation config may predate them)."""
    settings = {}
    for name in ("datastore_tokens", "datastore_min_ngram"):
        value = getattr(drafter.generation_config, name, None)
        settings[name] = int(getattr(drafter.config, name) if value is None else value)
    return settings


def lookup_continuation(sequence: torch.LongTensor, max_ngram: int, num_tokens: int) -> torch.LongTensor | None:
    """Prompt lookup: the continuation that most often followed the sequence's longest repeated suffix.

    Finds the longest suffix (n = `max_ngram` down to 1) that occurred earlier in the sequence, then builds the
    proposal token by token: each next token is the one that most often followed the occurrences still agreeing with
    the proposal so far, the latest occurrence's on a tie; it stops at `num_tokens` tokens or where no occurrence has
    a next token yet. With one occurrence this is a plain copy of what followed it. Voting over every occurrence
    instead of copying after the latest one also carries a copy past the sequence's end (a repeating line's latest
    occurrence is cut off there, its earlier ones are not). Returns None when even the last token never occurred.

    Args:
        sequence: `[length]` token ids (prompt and generated tokens so far).
        max_ngram: longest suffix to match.
        num_tokens: most tokens to return.
    """
    length = sequence.shape[0]
    for size in range(min(max_ngram, length - 1), 0, -1):
        windows = sequence[:-1].unfold(0, size, 1)  # a window starting at i ends at i + size - 1 <= length - 2
        hits = (windows == sequence[-size:]).all(dim=-1).nonzero().flatten()
        if hits.numel():
            break
    else:
        return None
    starts = hits + size  # where each occurrence's continuation begins, in sequence order (all < length)
    proposal = []
    for step in range(num_tokens):
        starts = starts[starts + step < length]
        if not starts.numel():
            break
        following = sequence[starts + step]
        _, inverse, counts = torch.unique(following, return_inverse=True, return_counts=True)
        most_frequent = (counts == counts.max())[inverse]  # per occurrence: its token is among the most frequent
        token = following[most_frequent.nonzero()[-1, 0]]  # the latest such occurrence's token
        proposal.append(token)
        starts = starts[following == token]
    return torch.stack(proposal)
