"""The datastore proposer (`coral_hf.datastore`): what it proposes, its file, and tree decoding with it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.numpy import save_file

from coral_hf import CoralDrafter, tree_generate
from coral_hf.datastore import DATASTORE_FILE, NgramDatastore, build_datastore
from coral_hf.hub import render_model_card

from .testing_utils import assert_counts_follow, exact_second_token_distribution, make_tiny_target


def _lookup(datastore: NgramDatastore, context: list[int], num_tokens: int = 4, min_ngram: int = 2):
    proposal = datastore.lookup(torch.tensor(context), num_tokens, min_ngram)
    return None if proposal is None else proposal.tolist()


def test_lookup_proposes_the_usual_continuation_of_the_longest_suffix():
    datastore = NgramDatastore.build(
        [
            [1, 2, 3, 4, 5],
            [1, 2, 3, 4, 5],
            [9, 2, 3, 7, 8],
            [6, 6, 9, 2, 3, 7, 8, 6],
        ],
        max_ngram=4,
    )
    assert len(datastore) == 5 + 5 + 5 + 8
    # "2 3" is followed by "4 5" twice and "7 8" twice: the longer suffix "9 2 3" decides for "7 8".
    assert _lookup(datastore, [0, 9, 2, 3]) == [7, 8, 6]
    assert _lookup(datastore, [0, 1, 2, 3]) == [4, 5]
    # Without a longer match, the majority (ties: the smaller id) wins at each step.
    assert _lookup(datastore, [0, 0, 2, 3], num_tokens=1) == [4]
    assert _lookup(datastore, [0, 0, 0, 3], min_ngram=2) is None  # "0 3" never occurs; a 1-gram is too short
    assert _lookup(datastore, [0, 0, 0, 3], min_ngram=1) == [4, 5]
    assert _lookup(datastore, [4, 5, 9], min_ngram=2) is None  # no match across the end of a sequence
    assert _lookup(datastore, [1, 2, 3], num_tokens=0) is None


def test_save_load_round_trip_and_bad_files_raise_one_clear_error(tmp_path):
    datastore = NgramDatastore.build([[1, 2, 3, 4], [2, 3, 5]], max_ngram=3, source="answers.jsonl")
    path = tmp_path / DATASTORE_FILE
    datastore.save(path)
    loaded = NgramDatastore.load(path)
    assert (loaded.max_ngram, loaded.source, len(loaded)) == (3, "answers.jsonl", 7)
    assert _lookup(loaded, [1, 2, 3]) == [4]
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(OSError, match="cannot read the datastore"):
        NgramDatastore.load(path)
    save_file({"weight": np.zeros(3, dtype=np.float32)}, str(path))
    with pytest.raises(OSError, match="not a coral_hf datastore"):
        NgramDatastore.load(path)
    with pytest.raises(OSError, match="cannot read the datastore"):
        NgramDatastore.load(tmp_path / "missing.safetensors")


def _repeating_prompts(count: int) -> list[torch.LongTensor]:
    return [torch.randint(1, 96, (1, 6), generator=torch.Generator().manual_seed(seed)) for seed in range(count)]


def test_datastore_branch_is_accepted_and_stays_lossless():
    """A datastore of the target's own greedy answers proposes what the target then writes: an untrained drafter's
    tree accepts far more with it, and the output stays plain greedy."""
    target = make_tiny_target("qwen2")
    prompts = _repeating_prompts(6)
    answers = [target.generate(prompt, max_new_tokens=24, do_sample=False)[0, 6:].tolist() for prompt in prompts]
    drafter = CoralDrafter.from_target(target)
    accepted = {}
    for store in (None, NgramDatastore.build(answers[:3])):
        drafter.datastore = store
        accepted[store is not None] = 0
        for prompt in prompts:
            # The datastore knows the answers to the first three prompts only: it must still be lossless on the rest.
            plain = target.generate(prompt, max_new_tokens=24, do_sample=False)
            tree = target.generate(
                prompt, max_new_tokens=24, do_sample=False, custom_generate=tree_generate, drafter=drafter
            )
            assert torch.equal(plain, tree)
            accepted[store is not None] += drafter.last_generation_stats["accepted"]
    assert accepted[True] > accepted[False] + 30
    drafter.generation_config.datastore_tokens = 0  # the branch off: back to what the drafter alone accepts
    total = 0
    for prompt in prompts:
        target.generate(prompt, max_new_tokens=24, do_sample=False, custom_generate=tree_generate, drafter=drafter)
        total += drafter.last_generation_stats["accepted"]
    assert total == accepted[False]


def test_tree_sampling_with_a_datastore_branch_matches_target_distribution():
    """Datastore nodes are deterministic proposals: the second token's marginal stays the target's."""
    target = make_tiny_target("llama", seed=2, vocab_size=24)
    with torch.no_grad():
        target.lm_head.weight.mul_(0.25)
    prompt = torch.tensor([[3, 7, 9, 5]])
    drafter = CoralDrafter.from_target(target)
    # Every likely first token continues a datastore n-gram, so the second token is usually a datastore proposal.
    drafter.datastore = NgramDatastore.build([[9, 5, first, second] for first in range(24) for second in (2, 4)])
    drafter.generation_config.datastore_min_ngram = 2
    exact_second = exact_second_token_distribution(target, prompt)
    counts = torch.zeros(24)
    torch.manual_seed(0)
    for _ in range(2500):
        out = target.generate(
            prompt, max_new_tokens=2, do_sample=True, top_k=0, custom_generate=tree_generate, drafter=drafter
        )
        counts[out[0, 5]] += 1
    assert_counts_follow(counts, exact_second)


def test_chain_proposes_the_datastore_where_the_context_has_no_copy_and_stays_lossless():
    """`generate(assistant_model=drafter)` proposes the datastore's continuation by the copy rule (here
    `copy_confidence=1`: whenever it has one): fewer rounds on prompts the datastore knows, plain greedy output."""
    target = make_tiny_target("qwen2")
    prompts = _repeating_prompts(6)
    answers = [target.generate(prompt, max_new_tokens=24, do_sample=False)[0, 6:].tolist() for prompt in prompts]
    drafter = CoralDrafter.from_target(target, draft_length=3, prompt_lookup_tokens=0, copy_confidence=1.0)
    rounds = {}
    for store in (None, NgramDatastore.build(answers[:3])):
        drafter.datastore = store
        rounds[store is not None] = stored = 0
        for prompt in prompts:
            plain = target.generate(prompt, max_new_tokens=24, do_sample=False)
            assisted = target.generate(prompt, max_new_tokens=24, do_sample=False, assistant_model=drafter)
            assert torch.equal(plain, assisted)
            rounds[store is not None] += drafter.last_generation_stats["rounds"]
            stored += drafter.last_generation_stats["datastore_rounds"]
        assert (stored > 0) == (store is not None)
    assert rounds[True] < rounds[False] - 10


def test_chain_sampling_with_datastore_proposals_matches_target_distribution():
    """Datastore proposals in the chain are one-hot q: the second token's marginal stays the target's."""
    target = make_tiny_target("llama", seed=2, vocab_size=24)
    with torch.no_grad():
        target.lm_head.weight.mul_(0.25)
    prompt = torch.tensor([[3, 7, 9, 5]])
    drafter = CoralDrafter.from_target(target, draft_length=3, prompt_lookup_tokens=0, copy_confidence=1.0)
    drafter.datastore = NgramDatastore.build([[9, 5, first, second] for first in range(24) for second in (2, 4)])
    drafter.generation_config.datastore_min_ngram = 2
    exact_second = exact_second_token_distribution(target, prompt)
    counts = torch.zeros(24)
    stored = 0
    torch.manual_seed(0)
    for _ in range(2500):
        # max_new_tokens=3: token 2 is proposed in the first drafted round (token 1 follows the placeholder round).
        out = target.generate(prompt, max_new_tokens=3, do_sample=True, top_k=0, top_p=1.0, assistant_model=drafter)
        counts[out[0, 5]] += 1
        stored += drafter.last_generation_stats["datastore_rounds"]
    assert stored > 1000
    assert_counts_follow(counts, exact_second)


def test_save_pretrained_carries_the_datastore(tmp_path):
    target = make_tiny_target("llama")
    drafter = CoralDrafter.from_target(target)
    drafter.save_pretrained(tmp_path / "plain")
    assert not (tmp_path / "plain" / DATASTORE_FILE).exists()
    assert CoralDrafter.from_pretrained(tmp_path / "plain", target=target).datastore is None
    drafter.datastore = NgramDatastore.build([[5, 6, 7, 8]])
    drafter.save_pretrained(tmp_path / "with")
    loaded = CoralDrafter.from_pretrained(tmp_path / "with", target=target)
    assert _lookup(loaded.datastore, [5, 6, 7]) == [8]
    # The model card counts the weights, not the datastore beside them, and names the datastore.
    plain_card, card = (str(render_model_card(tmp_path / name)) for name in ("plain", "with"))
    parameters = next(line for line in plain_card.splitlines() if line.startswith("| Parameters"))
    assert parameters in card.splitlines()
    assert "| Datastore | 4 tokens" in card and "Datastore" not in plain_card
    (tmp_path / "with" / DATASTORE_FILE).write_bytes(b"\x00" * 16)
    with pytest.raises(OSError, match="cannot read the datastore"):
        CoralDrafter.from_pretrained(tmp_path / "with", target=target)


def test_build_datastore_indexes_answers_as_the_target_ends_them(tmp_path):
    from transformers import AutoTokenizer

    from coral_hf.targets import embedded_target_path

    tokenizer = AutoTokenizer.from_pretrained(embedded_target_path())
    conversations = [
        [{"role": "user", "content": "Say hi"}, {"role": "assistant", "content": "Hello there, how are you?"}],
        [{"role": "user", "content": "Again"}, {"role": "assistant", "content": "Hello there, friend."}],
    ]
    datastore = build_datastore(conversations, tokenizer, source="chat")
    context = tokenizer("Hello there, how are", add_special_tokens=False).input_ids
    proposal = datastore.lookup(torch.tensor(context), 4)
    assert tokenizer.decode(proposal) == " you?" + tokenizer.eos_token
    assert len(datastore) == sum(
        len(tokenizer(message["content"], add_special_tokens=False).input_ids) + 1
        for conversation in conversations
        for message in conversation
        if message["role"] == "assistant"
    )


def test_cli_writes_the_datastore_into_the_drafter_and_leaves_the_heldout_split_out(tmp_path, capsys):
    import shutil

    from coral_hf.cli import main
    from coral_hf.loading import shipped_drafter_path
    from coral_hf.training.data import split_conversations

    drafter_dir = tmp_path / "drafter"
    shutil.copytree(shipped_drafter_path("smollm2-135m-instruct"), drafter_dir)
    (drafter_dir / DATASTORE_FILE).unlink(missing_ok=True)
    records = [
        {"messages": [{"role": "user", "content": f"Question {index}"}, {"role": "assistant", "content": "Fine."}]}
        for index in range(200)
    ]
    held_out = len(split_conversations([record["messages"] for record in records])[1])
    assert held_out > 0
    data = tmp_path / "answers.jsonl"
    data.write_text("".join(json.dumps(record) + "\n" for record in records))
    assert main(["datastore", "--drafter", str(drafter_dir), "--data", str(data)]) == 0
    assert f"{held_out} held-out conversations left out" in capsys.readouterr().out
    datastore = NgramDatastore.load(drafter_dir / DATASTORE_FILE)
    assert datastore.source == "answers.jsonl"
    assert main(["datastore", "--drafter", str(tmp_path / "nowhere"), "--data", str(data)]) == 2
    assert "no config.json" in capsys.readouterr().err
