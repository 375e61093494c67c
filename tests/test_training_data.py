import io
import json
import logging

import pytest
import torch
from datasets import Dataset
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from coral_hf.training.data import (
    CoralDataCollator,
    _iter_json_array,
    build_training_dataset,
    load_conversations,
    split_conversations,
    tokenize_conversation,
)

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|user|>", "<|assistant|>", "<|system|>", "</s>"]

# SmolLM2's template: ChatML with a default system prompt injected when the conversation has none.
CHATML_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# Zephyr: other markers, and the same end-of-turn token (EOS) after user turns, which must stay unmasked.
ZEPHYR_TEMPLATE = (
    "{% for message in messages %}{{ '<|' + message['role'] + '|>\n' + message['content'] + eos_token + '\n' }}"
    "{% if loop.last and add_generation_prompt %}{{ '<|assistant|>\n' }}{% endif %}{% endfor %}"
)
# Llama-2 style: trims contents, no generation prompt, a space before EOS.
LLAMA2_TEMPLATE = (
    "{% for message in messages %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] | trim + "
    "' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' ' + message['content'] | trim + ' ' + eos_token }}"
    "{% endif %}{% endfor %}"
)
# Mistral v0.1 style: the system prompt goes into the last user turn, so a shorter history is not a prefix.
MISTRAL_TEMPLATE = (
    "{% set system = messages[0]['content'] if messages[0]['role'] == 'system' else '' %}"
    "{% set ns = namespace(last_user=0) %}{% for m in messages %}{% if m['role'] == 'user' %}"
    "{% set ns.last_user = loop.index0 %}{% endif %}{% endfor %}"
    "{% for m in messages %}{% if m['role'] == 'user' %}{{ '[INST] ' }}"
    "{% if loop.index0 == ns.last_user and system %}{{ system + '\n\n' }}{% endif %}"
    "{{ m['content'] + ' [/INST]' }}{% elif m['role'] == 'assistant' %}{{ m['content'] + eos_token }}"
    "{% endif %}{% endfor %}"
)

MULTI_TURN = [
    {"role": "user", "content": "Hello there, how are you?"},
    {"role": "assistant", "content": "I am fine, thank you. And you?"},
    {"role": "user", "content": "Tell me about the quick brown fox."},
    {"role": "assistant", "content": "The quick brown fox jumps over the lazy dog: ünïcode 🙂 too."},
]
WITH_SYSTEM = [{"role": "system", "content": "You answer briefly."}, *MULTI_TURN]


@pytest.fixture(scope="module")
def tokenizer():
    """A byte-level BPE tokenizer trained in code on a few sentences (decoding is exact)."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=500,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    corpus = [message["content"] for message in WITH_SYSTEM] + ["user assistant system INST"]
    backend.train_from_iterator(corpus * 5, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="</s>", bos_token="<|im_start|>", unk_token="<|endoftext|>"
    )


def with_template(tokenizer, template):
    tokenizer.chat_template = template
    return tokenizer


def masked_runs(tokenizer, example):
    """Decoded runs of consecutive masked tokens."""
    runs, current = [], []
    for token_id, flag in zip(example["input_ids"], example["loss_mask"], strict=True):
        if flag:
            current.append(token_id)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return [tokenizer.decode(run) for run in runs]


def assistant_contents(conversation):
    return [message["content"] for message in conversation if message["role"] == "assistant"]


@pytest.mark.parametrize("conversation", [MULTI_TURN, WITH_SYSTEM], ids=["default-system", "own-system"])
def test_chatml_mask_covers_exactly_assistant_contents(tokenizer, conversation):
    tokenizer = with_template(tokenizer, CHATML_TEMPLATE)
    example = tokenize_conversation(tokenizer, conversation, max_length=1024)
    assert example["input_ids"] == tokenizer.apply_chat_template(conversation)["input_ids"]
    assert masked_runs(tokenizer, example) == [content + "<|im_end|>" for content in assistant_contents(conversation)]


def test_zephyr_mask_skips_end_of_turn_of_user_turns(tokenizer):
    tokenizer = with_template(tokenizer, ZEPHYR_TEMPLATE)
    example = tokenize_conversation(tokenizer, WITH_SYSTEM, max_length=1024)
    eos = tokenizer.eos_token_id
    assert example["input_ids"].count(eos) == 5
    assert (
        sum(flag for token, flag in zip(example["input_ids"], example["loss_mask"], strict=True) if token == eos) == 2
    )
    assert masked_runs(tokenizer, example) == [content + "</s>" for content in assistant_contents(WITH_SYSTEM)]


def test_trimming_template_with_space_before_end_of_turn(tokenizer):
    tokenizer = with_template(tokenizer, LLAMA2_TEMPLATE)
    conversation = [
        {"role": "user", "content": " Hello there "},
        {"role": "assistant", "content": "  I am fine.\n"},
        {"role": "user", "content": "And you?"},
        {"role": "assistant", "content": "The quick brown fox."},
    ]
    example = tokenize_conversation(tokenizer, conversation, max_length=1024)
    runs = [run.strip() for run in masked_runs(tokenizer, example)]
    # the template's space before "</s>" is not the model's: it stays unmasked
    assert runs == ["I am fine.", "</s>", "The quick brown fox.", "</s>"]


def test_template_whose_history_is_not_a_prefix(tokenizer):
    tokenizer = with_template(tokenizer, MISTRAL_TEMPLATE)
    full = tokenizer.apply_chat_template(WITH_SYSTEM, tokenize=False)
    history = tokenizer.apply_chat_template(WITH_SYSTEM[:2], tokenize=False, add_generation_prompt=True)
    assert not full.startswith(history)
    example = tokenize_conversation(tokenizer, WITH_SYSTEM, max_length=1024)
    assert masked_runs(tokenizer, example) == [content + "</s>" for content in assistant_contents(WITH_SYSTEM)]


def test_user_text_that_looks_like_the_reply_is_not_masked(tokenizer):
    tokenizer = with_template(tokenizer, CHATML_TEMPLATE)
    conversation = [
        {"role": "user", "content": "Say: fine"},
        {"role": "assistant", "content": "fine"},
        {"role": "user", "content": "Again, say fine"},
        {"role": "assistant", "content": "fine"},
    ]
    example = tokenize_conversation(tokenizer, conversation, max_length=1024)
    assert masked_runs(tokenizer, example) == ["fine<|im_end|>", "fine<|im_end|>"]


def test_truncation_keeps_a_prefix_of_ids_and_mask(tokenizer):
    tokenizer = with_template(tokenizer, CHATML_TEMPLATE)
    full = tokenize_conversation(tokenizer, MULTI_TURN, max_length=1024)
    mask = full["loss_mask"]
    reply_starts = [i for i, flag in enumerate(mask) if flag and not mask[i - 1]]
    cut = reply_starts[1] + 3  # inside the second reply
    short = tokenize_conversation(tokenizer, MULTI_TURN, max_length=cut)
    assert short["input_ids"] == full["input_ids"][:cut]
    assert short["loss_mask"] == full["loss_mask"][:cut]
    runs = masked_runs(tokenizer, short)
    assert runs[0] == MULTI_TURN[1]["content"] + "<|im_end|>"
    assert MULTI_TURN[3]["content"].startswith(runs[1]) and runs[1]


def test_build_training_dataset_skips_conversations_without_assistant_tokens(tokenizer):
    tokenizer = with_template(tokenizer, CHATML_TEMPLATE)
    long_question = [{"role": "user", "content": "quick brown fox " * 50}, {"role": "assistant", "content": "Yes."}]
    dataset = build_training_dataset(tokenizer, [MULTI_TURN, long_question, WITH_SYSTEM], max_length=64)
    assert dataset.column_names == ["input_ids", "loss_mask"]
    assert len(dataset) == 2
    assert all(len(row["input_ids"]) <= 64 and any(row["loss_mask"]) for row in dataset)


def test_collator_right_pads_to_longest(tokenizer):
    features = [{"input_ids": [5, 6, 7], "loss_mask": [0, 1, 1]}, {"input_ids": [8], "loss_mask": [1]}]
    batch = CoralDataCollator(tokenizer)(features)
    assert batch["input_ids"].tolist() == [[5, 6, 7], [8, tokenizer.eos_token_id, tokenizer.eos_token_id]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert batch["loss_mask"].tolist() == [[0, 1, 1], [1, 0, 0]]
    assert all(tensor.dtype == torch.long for tensor in batch.values())

    tokenizer.pad_token = "<|endoftext|>"
    try:
        batch = CoralDataCollator(tokenizer, pad_to_multiple_of=4)(features)
    finally:
        tokenizer.pad_token = None
    assert batch["input_ids"].shape == (2, 4)
    assert batch["input_ids"][1, 1:].tolist() == [tokenizer.convert_tokens_to_ids("<|endoftext|>")] * 3


def test_real_smollm2_tokenizer():
    """The embedded SmolLM2's own tokenizer and chat template (the target the shipped drafter trains on)."""
    from coral_hf.targets import embedded_target_path

    tokenizer = AutoTokenizer.from_pretrained(embedded_target_path())
    for conversation in (MULTI_TURN, WITH_SYSTEM):
        example = tokenize_conversation(tokenizer, conversation, max_length=1024)
        assert example["input_ids"] == tokenizer.apply_chat_template(conversation)["input_ids"]
        expected = [content + "<|im_end|>" for content in assistant_contents(conversation)]
        assert masked_runs(tokenizer, example) == expected


# Loading


def sharegpt_record(*turns):
    return {"id": "x", "conversations": [{"from": speaker, "value": text} for speaker, text in turns]}


def test_json_array_reader_recovers_complete_records_of_a_truncated_file(caplog):
    records = [
        sharegpt_record(("human", f"question {i}"), ("gpt", f"answer {i}, with [brackets], {{}}")) for i in range(5)
    ]
    text = json.dumps(records, indent=2)
    cut = text.index("question 4")
    for chunk_chars in (7, 64, 1 << 20):  # element boundaries fall inside and outside chunks
        with caplog.at_level(logging.WARNING, logger="coral_hf.training.data"):
            caplog.clear()
            assert list(_iter_json_array(io.StringIO(text[:cut]), chunk_chars=chunk_chars)) == records[:4]
        assert "recovered 4 complete records" in caplog.text
        assert list(_iter_json_array(io.StringIO(text), chunk_chars=chunk_chars)) == records
    with pytest.raises(ValueError, match="expected a JSON array"):
        list(_iter_json_array(io.StringIO('{"a": 1}')))


def test_load_local_files_in_both_formats(tmp_path):
    sharegpt = [
        sharegpt_record(("human", "Hi"), ("gpt", "Hello!")),
        # a chunk that starts with a reply, an unknown speaker, an empty turn, two user turns in a row
        sharegpt_record(
            ("gpt", "...continued"),
            ("human", "Next"),
            ("narrator", "x"),
            ("gpt", ""),
            ("human", "More"),
            ("chatgpt", "Sure."),
            ("human", "trailing question"),
        ),
        sharegpt_record(("gpt", "only a reply")),
        {
            "messages": [
                {"role": "system", "content": "Be nice."},
                {"role": "user", "content": "Hey"},
                {"role": "assistant", "content": "Hey you."},
            ]
        },
    ]
    expected = [
        [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
        [{"role": "user", "content": "Next\n\nMore"}, {"role": "assistant", "content": "Sure."}],
        [
            {"role": "system", "content": "Be nice."},
            {"role": "user", "content": "Hey"},
            {"role": "assistant", "content": "Hey you."},
        ],
    ]
    array_path, lines_path = tmp_path / "data.json", tmp_path / "data.jsonl"
    array_path.write_text(json.dumps(sharegpt))
    lines_path.write_text("\n".join(json.dumps(record) for record in sharegpt) + "\n")
    assert load_conversations(str(array_path)) == expected
    assert load_conversations(lines_path) == expected
    assert load_conversations(array_path, max_samples=2) == expected[:2]
    assert load_conversations(Dataset.from_list([sharegpt[0]])) == expected[:1]


@pytest.mark.parametrize(
    "record, message",
    [
        ({"text": "hi"}, "Record 1: expected a list under 'conversations'"),
        ({"messages": [{"role": "user"}]}, "Record 1, message 0"),
        ({"conversations": [{"from": "human", "value": ["a"]}]}, "Record 1, message 0: content must be a string"),
    ],
)
def test_malformed_record_names_its_index(tmp_path, record, message):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(sharegpt_record(("human", "a"), ("gpt", "b"))) + "\n" + json.dumps(record) + "\n")
    with pytest.raises(ValueError, match=message):
        load_conversations(path)


def test_sharegpt_package_fast_path():
    conversations = load_conversations("sharegpt", max_samples=20)
    assert len(conversations) == 20
    for conversation in conversations:
        roles = [message["role"] for message in conversation if message["role"] != "system"]
        assert roles == ["user", "assistant"] * (len(roles) // 2) and roles


def test_sharegpt_package_recovers_all_complete_records(caplog):
    from coral_hf.training.data import _iter_sharegpt_package

    with caplog.at_level(logging.WARNING, logger="coral_hf.training.data"):
        assert sum(1 for _ in _iter_sharegpt_package()) == 17_671
    assert "truncated" in caplog.text


def test_split_is_deterministic_disjoint_and_order_independent():
    conversations = [
        [{"role": "user", "content": f"question {i}"}, {"role": "assistant", "content": "answer"}] for i in range(2000)
    ]
    train, heldout = split_conversations(conversations, heldout_fraction=0.1, seed=0)
    assert len(train) + len(heldout) == 2000 and 150 < len(heldout) < 250
    heldout_keys = {c[0]["content"] for c in heldout}
    assert not heldout_keys & {c[0]["content"] for c in train}
    assert split_conversations(conversations, 0.1, seed=0) == (train, heldout)
    # the same conversation is held out whatever else is loaded with it
    _, heldout_subset = split_conversations(conversations[::-1][:500], 0.1, seed=0)
    assert {c[0]["content"] for c in heldout_subset} <= heldout_keys
    assert split_conversations(conversations, 0.1, seed=1)[1] != heldout
    assert split_conversations(conversations, 0.0)[1] == []
