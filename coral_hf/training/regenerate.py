"""Data the target wrote itself: regenerate the assistant turns of chat conversations with the target.

Drafters learn the target's own distribution best from text the target produced (EAGLE-3, SpecForge and
speculators all train on regenerated responses). Each conversation keeps its system prompt and user turns; every
assistant turn is replaced by the target's answer to the regenerated history so far. Conversations are processed in
batches (left-padded batched `generate`), turn by turn, and written as JSONL `{"id", "messages"}` records that
`coral-hf train --data` reads. Resumable: records already in the output file (by `id`) are skipped, and each batch
is appended and flushed as soon as it is done.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import GenerationConfig, PreTrainedModel, PreTrainedTokenizerBase

from .data import Conversation

logger = logging.getLogger(__name__)


def done_ids(path: Path) -> set[int]:
    """Ids of the records already written to `path` (a truncated last line, from an interruption, is ignored)."""
    if not path.is_file():
        return set()
    ids = set()
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            try:
                ids.add(int(json.loads(line)["id"]))
            except (ValueError, KeyError, TypeError):
                continue
    return ids


@torch.no_grad()
def regenerate_batch(
    target: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    conversations: Sequence[Conversation],
    generation_config: GenerationConfig,
    max_turns: int | None = None,
) -> list[Conversation]:
    """The conversations with their assistant turns rewritten by `target`, turn by turn, as one batch per turn.

    Args:
        target: the model whose answers replace the originals.
        tokenizer: its tokenizer, with a chat template.
        conversations: normalised conversations (`coral_hf.training.data.load_conversations`).
        generation_config: how to answer (greedy or sampled, `max_new_tokens`, EOS).
        max_turns: regenerate at most this many assistant turns per conversation (later ones are dropped).
    """
    histories: list[Conversation] = [[m for m in c if m["role"] == "system"][:1] for c in conversations]
    questions = [[m["content"] for m in c if m["role"] == "user"] for c in conversations]
    turns = max((len(q) for q in questions), default=0)
    turns = min(turns, max_turns) if max_turns is not None else turns
    padding_side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # generation continues every row from its last real token
    try:
        for turn in range(turns):
            active = [i for i, q in enumerate(questions) if turn < len(q)]
            for i in active:
                histories[i].append({"role": "user", "content": questions[i][turn]})
            texts = [
                tokenizer.apply_chat_template(histories[i], add_generation_prompt=True, tokenize=False) for i in active
            ]
            inputs = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(target.device)
            output = target.generate(**inputs, generation_config=generation_config)
            answers = tokenizer.batch_decode(output[:, inputs["input_ids"].shape[1] :], skip_special_tokens=True)
            for i, answer in zip(active, answers, strict=True):
                histories[i].append({"role": "assistant", "content": answer.strip()})
    finally:
        tokenizer.padding_side = padding_side
    return histories


def _first_prompt_length(tokenizer: PreTrainedTokenizerBase, conversation: Conversation) -> int:
    """Tokens of the prompt that asks for the conversation's first answer (system prompt + first user turn)."""
    system = [m for m in conversation if m["role"] == "system"][:1]
    user = next(({"role": "user", "content": m["content"]} for m in conversation if m["role"] == "user"), None)
    messages = system + ([user] if user else [])
    if not messages:
        return 0
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def regenerate_conversations(
    target: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    conversations: Sequence[Conversation],
    output: str | os.PathLike,
    *,
    batch_size: int = 16,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    top_p: float = 1.0,
    max_turns: int | None = None,
    max_prompt_tokens: int | None = None,
    min_turns: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> int:
    """Regenerate `conversations` into the JSONL file `output` (appending, resumable); returns records written now.

    Record `id` is the conversation's index in `conversations`, so a rerun with the same inputs skips what is done.
    `temperature=0` answers greedily; `> 0` samples (with `top_p`), reseeded per batch for reproducibility.
    Batches are formed from conversations of similar first-prompt length: a left-padded batch costs what its longest
    prompt costs, and chat datasets mix 20-token and 5,000-token questions. `max_prompt_tokens` skips (and logs)
    conversations whose first prompt is longer; a drafter trained at a shorter `max_length` would not see their
    answers anyway. `min_turns` skips (and logs) conversations with fewer user turns, e.g. to add later turns to a
    first-turn set without answering the single-turn conversations again (ids stay the conversations' indices).
    """
    if max_prompt_tokens is not None and max_prompt_tokens < 1:
        raise ValueError(f"max_prompt_tokens must be >= 1, got {max_prompt_tokens}")
    if min_turns is not None and min_turns < 1:
        raise ValueError(f"min_turns must be >= 1, got {min_turns}")
    path = Path(output)
    path.parent.mkdir(parents=True, exist_ok=True)
    skip = done_ids(path)
    todo = [i for i in range(len(conversations)) if i not in skip]
    lengths = {i: _first_prompt_length(tokenizer, conversations[i]) for i in todo}
    too_long = [i for i in todo if max_prompt_tokens is not None and lengths[i] > max_prompt_tokens]
    if too_long:
        logger.warning(
            "skipping %d conversations whose first prompt exceeds %d tokens", len(too_long), max_prompt_tokens
        )
    too_short = [
        i
        for i in todo
        if min_turns is not None and sum(message["role"] == "user" for message in conversations[i]) < min_turns
    ]
    if too_short:
        logger.warning("skipping %d conversations with fewer than %d user turns", len(too_short), min_turns)
    todo = sorted(set(todo) - set(too_long) - set(too_short), key=lambda i: (lengths[i], i))
    pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    config = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=temperature > 0,
        temperature=temperature if temperature > 0 else None,
        top_p=top_p if temperature > 0 else None,
        top_k=None,
        eos_token_id=target.generation_config.eos_token_id,
        pad_token_id=pad_token_id,
    )
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    written = 0
    bar = tqdm(total=len(todo), desc="regenerate", unit="conv", disable=not progress)
    with path.open("a", encoding="utf-8") as handle:
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            torch.manual_seed(seed + batch[0])
            answered = regenerate_batch(target, tokenizer, [conversations[i] for i in batch], config, max_turns)
            for index, messages in zip(batch, answered, strict=True):
                handle.write(json.dumps({"id": index, "messages": messages}, ensure_ascii=False) + "\n")
            handle.flush()
            written += len(batch)
            bar.update(len(batch))
    bar.close()
    return written


__all__ = ["done_ids", "regenerate_batch", "regenerate_conversations"]
