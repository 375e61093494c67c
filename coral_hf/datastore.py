"""A datastore of the target's own earlier answers, proposing continuations as one more branch of the draft tree.

The drafter guesses from the target's features, prompt lookup copies from the current context; a datastore copies
from what the target wrote before, for other prompts (retrieval-based speculative decoding, REST: He et al., 2023).
Built from the answers `coral-hf regenerate` writes, it knows the target's recurring phrasing: the boilerplate of
its code answers, the way it closes an explanation. Where the context's last n tokens (`max_ngram` down to
`min_ngram`) occur in the datastore, the continuation that followed them most often is proposed.

Storage is two int32 arrays (8 bytes per token): the token stream (answers separated by -1) and every position
that has a continuation, sorted by the tokens ending there read backwards. Matching the context's last n tokens is
then n nested binary searches (each longer suffix narrows the previous range), with no hash table in memory.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

DATASTORE_FILE = "datastore.safetensors"
_FORMAT = "coral_hf.datastore/1"
_SEPARATOR = -1
_MAX_SAMPLES = 256  # occurrences voted on per proposal: enough to find the usual continuation of a common n-gram


class _Column:
    """`tokens[order[i] - back]` as a sequence, so `bisect` can search one level of the sorted positions."""

    def __init__(self, tokens: np.ndarray, order: np.ndarray, back: int):
        self.tokens, self.order, self.back = tokens, order, back

    def __getitem__(self, index: int) -> int:
        return int(self.tokens[self.order[index] - self.back])

    def __len__(self) -> int:
        return len(self.order)


class NgramDatastore:
    """Token sequences indexed by the n-grams that end at each position (n <= `max_ngram`).

    Args:
        tokens: `[n]` int32, the sequences, each preceded by at least `max_ngram` separators (-1) and followed by
            one; use [`NgramDatastore.build`].
        order: `[m]` int32, the positions of `tokens` that are followed by a token, sorted by the up to
            `max_ngram` tokens ending there, last token first.
        max_ngram: longest context suffix matched.
        source: what the datastore was built from (saved with it, shown in the model card).
    """

    def __init__(self, tokens: np.ndarray, order: np.ndarray, max_ngram: int, source: str = ""):
        if tokens.ndim != 1 or order.ndim != 1 or max_ngram < 1:
            raise ValueError("NgramDatastore takes 1-D token and order arrays and max_ngram >= 1.")
        if tokens.shape[0] <= max_ngram or (tokens[:max_ngram] != _SEPARATOR).any() or tokens[-1] != _SEPARATOR:
            raise ValueError(f"The datastore's token stream must start with {max_ngram} separators and end with one.")
        self.tokens = tokens.astype(np.int32, copy=False)
        self.order = order.astype(np.int32, copy=False)
        self.max_ngram = int(max_ngram)
        self.source = source

    @classmethod
    def build(cls, sequences: Iterable[Sequence[int]], max_ngram: int = 8, source: str = "") -> NgramDatastore:
        """Index token sequences (e.g. the target's tokenized answers, each ending with its end-of-turn token)."""
        parts = [np.full(max_ngram, _SEPARATOR, dtype=np.int32)]
        for sequence in sequences:
            if len(sequence):
                parts.append(np.asarray(sequence, dtype=np.int32))
                parts.append(np.full(1, _SEPARATOR, dtype=np.int32))
        tokens = np.concatenate(parts)
        if (tokens[max_ngram:] < _SEPARATOR).any():
            raise ValueError("Token ids must be >= 0.")
        positions = np.nonzero((tokens[:-1] != _SEPARATOR) & (tokens[1:] != _SEPARATOR))[0].astype(np.int64)
        # np.lexsort sorts by its last key first: the token at the position, then the one before it, and so on.
        keys = [tokens[positions - back] for back in range(max_ngram - 1, -1, -1)]
        order = positions[np.lexsort(keys)] if positions.size else positions
        return cls(tokens, order.astype(np.int32), max_ngram, source)

    def __len__(self) -> int:
        """Tokens in the datastore (separators excluded)."""
        return int((self.tokens != _SEPARATOR).sum())

    def save(self, path: str | Path) -> None:
        save_file(
            {"tokens": self.tokens, "order": self.order},
            str(path),
            metadata={"format": _FORMAT, "max_ngram": str(self.max_ngram), "source": self.source},
        )

    @classmethod
    def load(cls, path: str | Path) -> NgramDatastore:
        """Load a saved datastore; a missing, corrupt or foreign file raises `OSError` naming it."""
        try:
            with safe_open(str(path), framework="numpy") as handle:
                metadata = handle.metadata() or {}
                arrays = {name: handle.get_tensor(name) for name in handle.keys()}
        except (OSError, SafetensorError, ValueError) as error:
            raise OSError(f"{path}: cannot read the datastore ({error}); build or download it again.") from error
        if metadata.get("format") != _FORMAT or set(arrays) != {"tokens", "order"}:
            raise OSError(f"{path}: not a coral_hf datastore (format {metadata.get('format')!r}).")
        try:
            return cls(arrays["tokens"], arrays["order"], int(metadata["max_ngram"]), metadata.get("source", ""))
        except (KeyError, ValueError) as error:
            raise OSError(f"{path}: invalid datastore ({error}); build or download it again.") from error

    def _match(self, context: Sequence[int], min_ngram: int) -> tuple[int, int] | None:
        """The range of `order` whose positions end the longest suffix of `context` found (at least `min_ngram`
        tokens), or None."""
        low, high, found = 0, len(self.order), None
        for back in range(min(self.max_ngram, len(context))):
            column = _Column(self.tokens, self.order, back)
            value = int(context[-1 - back])
            low, high = bisect.bisect_left(column, value, low, high), bisect.bisect_right(column, value, low, high)
            if low == high:
                break
            if back + 1 >= min_ngram:
                found = (low, high)
        return found

    def lookup(self, context: torch.LongTensor, num_tokens: int, min_ngram: int = 3) -> torch.LongTensor | None:
        """The usual continuation of the context's longest suffix found in the datastore, up to `num_tokens` tokens.

        Each next token is the one that most often followed the occurrences still agreeing with the proposal (ties:
        the smaller id), so the proposal is deterministic. None when no suffix of at least `min_ngram` tokens occurs.

        Args:
            context: `[length]` token ids (prompt and generated tokens so far).
            num_tokens: most tokens to propose.
            min_ngram: shortest suffix that counts as a match.
        """
        if num_tokens < 1:
            return None
        found = self._match(context[-self.max_ngram :].tolist(), max(min_ngram, 1))
        if found is None:
            return None
        low, high = found
        ends = self.order[low:high].astype(np.int64)
        if ends.size > _MAX_SAMPLES:
            ends = ends[np.linspace(0, ends.size - 1, _MAX_SAMPLES).astype(np.int64)]
        proposal = []
        for step in range(1, num_tokens + 1):
            following = self.tokens[np.minimum(ends + step, self.tokens.shape[0] - 1)]
            values, counts = np.unique(following[following != _SEPARATOR], return_counts=True)
            if not values.size:
                break
            token = int(values[counts.argmax()])
            proposal.append(token)
            ends = ends[following == token]
        return torch.tensor(proposal, dtype=torch.long, device=context.device) if proposal else None


def build_datastore(
    conversations: Iterable[Sequence[dict[str, str]]],
    tokenizer: PreTrainedTokenizerBase,
    max_ngram: int = 8,
    source: str = "",
) -> NgramDatastore:
    """A datastore of the assistant turns of chat `conversations` (e.g. what `coral-hf regenerate` wrote), each
    tokenized as the target generates it: the text, then the end-of-turn (EOS) token the target stops on."""
    end = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    answers = (
        tokenizer(message["content"], add_special_tokens=False).input_ids + end
        for conversation in conversations
        for message in conversation
        if message["role"] == "assistant" and message["content"]
    )
    return NgramDatastore.build(answers, max_ngram=max_ngram, source=source)


__all__ = ["DATASTORE_FILE", "NgramDatastore", "build_datastore"]
