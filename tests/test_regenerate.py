"""`coral-hf regenerate`: the target's own answers replace the assistant turns, batched, resumable, trainable."""

from __future__ import annotations

import json

from coral_hf.cli import main
from coral_hf.training.data import load_conversations
from coral_hf.training.regenerate import regenerate_conversations

from .testing_utils import make_chat_tokenizer, make_tiny_target

CONVERSATIONS = [
    [{"role": "user", "content": "hello there"}, {"role": "assistant", "content": "original answer one"}],
    [
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": "how are you"},
        {"role": "assistant", "content": "original answer two"},
        {"role": "user", "content": "and now"},
        {"role": "assistant", "content": "original answer three"},
    ],
    [{"role": "user", "content": "a longer question about the weather today"}, {"role": "assistant", "content": "x"}],
]


def test_regenerate_replaces_answers_batched_and_resumes(tmp_path):
    tokenizer = make_chat_tokenizer(["hello there how are you", "be brief and now the weather today"])
    target = make_tiny_target("llama", vocab_size=len(tokenizer))
    output = tmp_path / "regen.jsonl"
    assert regenerate_conversations(target, tokenizer, CONVERSATIONS[:2], output, batch_size=2, max_new_tokens=5) == 2
    # Resume: only the new conversation is generated, and the file then holds each id once.
    assert regenerate_conversations(target, tokenizer, CONVERSATIONS, output, batch_size=2, max_new_tokens=5) == 1
    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert sorted(record["id"] for record in records) == [0, 1, 2]
    by_id = {record["id"]: record["messages"] for record in records}
    second = by_id[1]
    assert [m["role"] for m in second] == ["system", "user", "assistant", "user", "assistant"]
    assert [m["content"] for m in second if m["role"] != "assistant"] == ["be brief", "how are you", "and now"]
    assert all("original" not in m["content"] for m in second)  # every answer is the target's own
    # Greedy and batched: the same answer as the conversation alone in a batch of one (left padding is right).
    alone = tmp_path / "alone.jsonl"
    regenerate_conversations(target, tokenizer, CONVERSATIONS[2:], alone, batch_size=1, max_new_tokens=5)
    assert json.loads(alone.read_text())["messages"][-1] == by_id[2][-1]
    # `coral-hf train --data` reads the output (as `messages` records; empty answers aside).
    assert len(load_conversations(str(output))) >= 1


def test_regenerate_batches_by_prompt_length_and_skips_long_prompts(tmp_path, caplog):
    tokenizer = make_chat_tokenizer(["hello there how are you", "be brief and now the weather today"])
    target = make_tiny_target("llama", vocab_size=len(tokenizer))
    longest_first = CONVERSATIONS[::-1]  # first prompts of 32, 21 and 12 tokens
    output = tmp_path / "regen.jsonl"
    regenerate_conversations(target, tokenizer, longest_first, output, batch_size=1, max_new_tokens=3)
    assert [json.loads(line)["id"] for line in output.read_text().splitlines()] == [2, 1, 0]  # shortest first
    capped = tmp_path / "capped.jsonl"
    with caplog.at_level("WARNING"):
        written = regenerate_conversations(
            target, tokenizer, longest_first, capped, batch_size=2, max_new_tokens=3, max_prompt_tokens=21
        )
    assert written == 2
    assert "skipping 1 conversations whose first prompt exceeds 21 tokens" in caplog.text
    assert sorted(json.loads(line)["id"] for line in capped.read_text().splitlines()) == [1, 2]


def test_regenerate_min_turns_keeps_multi_turn_conversations_with_their_ids(tmp_path, caplog):
    tokenizer = make_chat_tokenizer(["hello there how are you", "be brief and now the weather today"])
    target = make_tiny_target("llama", vocab_size=len(tokenizer))
    output = tmp_path / "turns.jsonl"
    with caplog.at_level("WARNING"):
        written = regenerate_conversations(
            target, tokenizer, CONVERSATIONS, output, batch_size=2, max_new_tokens=3, max_turns=2, min_turns=2
        )
    assert written == 1 and "skipping 2 conversations with fewer than 2 user turns" in caplog.text
    (record,) = [json.loads(line) for line in output.read_text().splitlines()]
    assert record["id"] == 1 and [m["role"] for m in record["messages"]].count("assistant") == 2


def test_cli_refuses_bad_batch_size(tmp_path, capsys):
    assert main(["regenerate", "--output", str(tmp_path / "x.jsonl"), "--batch-size", "0"]) == 2
    assert "--batch-size" in capsys.readouterr().err
