"""Shared test helpers: tiny targets of several families built in code, a briefly trained tiny drafter, a ChatML
tokenizer trained in code, and the exact-distribution / chi-square helpers of the sampling tests."""

from __future__ import annotations

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

TINY_VOCAB = 96
_FAMILIES = {
    "llama": (LlamaConfig, LlamaForCausalLM, {}),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM, {"use_sliding_window": False}),
    "mistral": (MistralConfig, MistralForCausalLM, {"sliding_window": None}),
}
FAMILIES = tuple(_FAMILIES)


def make_tiny_target(family: str = "llama", seed: int = 0, vocab_size: int = TINY_VOCAB, **overrides):
    """A 2-layer causal LM of `family` with random weights (fp32, eval mode, deterministic per seed)."""
    config_class, model_class, family_kwargs = _FAMILIES[family]
    kwargs = dict(
        vocab_size=vocab_size,
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=0,
        tie_word_embeddings=False,
    )
    kwargs.update(family_kwargs)
    kwargs.update(overrides)
    torch.manual_seed(seed)
    model = model_class(config_class(**kwargs)).eval()
    # Random init gives near-uniform next-token distributions; sharpen the head so greedy paths are well defined
    # and sampling distributions are far from uniform.
    with torch.no_grad():
        model.lm_head.weight.mul_(8.0)
    return model


def train_tiny_drafter(target, steps: int = 300, seed: int = 0, **config_overrides):
    """A drafter fitted (single-step, on the target's greedy continuations) to a tiny target in a few seconds.

    Random drafters accept almost nothing; this one accepts multiple tokens per round, which exercises the
    acceptance and cache-rollback paths.
    """
    from coral_hf import CoralDrafter

    torch.manual_seed(seed)
    drafter = CoralDrafter.from_target(target, **config_overrides)
    vocab = target.config.vocab_size
    with torch.no_grad():
        prompts = torch.randint(1, vocab, (16, 4))
        sequences = torch.cat(
            [target.generate(p[None], max_new_tokens=40, min_new_tokens=40, do_sample=False) for p in prompts]
        )
        features = target.model(sequences).last_hidden_state
        target_logits = target.lm_head(features)
    optimizer = torch.optim.AdamW(drafter.parameters(), lr=3e-3)
    drafter.train()
    for _ in range(steps):
        out = drafter(input_ids=sequences[:, 1:], hidden_states=features[:, :-1], output_logits=True)
        loss = torch.nn.functional.smooth_l1_loss(out.last_hidden_state, features[:, 1:]) + 0.1 * (
            torch.nn.functional.cross_entropy(
                out.logits.flatten(0, 1), target_logits[:, 1:].argmax(-1).flatten(), reduction="mean"
            )
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return drafter.eval()


def sampling_distribution(target, ids, temperature: float = 1.0, top_k: int | None = None) -> torch.Tensor:
    """The target's next-token sampling distribution (temperature, then top-k) for each row of `ids`."""
    logits = target(ids).logits[:, -1].float() / temperature
    if top_k is not None:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return logits.softmax(-1)


def exact_second_token_distribution(target, prompt, temperature: float = 1.0, top_k: int | None = None):
    """P(2nd generated token | prompt) under the target's own sampling, by enumerating the first token."""
    return exact_second_and_third_token_distributions(target, prompt, temperature, top_k, third=False)[0]


def exact_second_and_third_token_distributions(
    target, prompt, temperature: float = 1.0, top_k: int | None = None, third: bool = True
):
    """P(2nd) and P(3rd generated token | prompt) under the target's own sampling, by enumerating earlier tokens
    (the 3rd is None with `third=False`, which skips its vocab x vocab forwards)."""
    with torch.no_grad():
        first = sampling_distribution(target, prompt, temperature, top_k)[0]
        vocab = first.shape[0]
        one = torch.cat([prompt.expand(vocab, -1), torch.arange(vocab)[:, None]], dim=1)
        joint = first[:, None] * sampling_distribution(target, one, temperature, top_k)  # [first, second]
        if not third:
            return joint.sum(0), None
        two = torch.cat([one.repeat_interleave(vocab, 0), torch.arange(vocab).repeat(vocab)[:, None]], dim=1)
        third_given_two = sampling_distribution(target, two, temperature, top_k).view(vocab, vocab, vocab)
        return joint.sum(0), (joint[:, :, None] * third_given_two).sum((0, 1))


def assert_counts_follow(counts: torch.Tensor, probabilities: torch.Tensor) -> None:
    """Chi-square goodness of fit of sampled token counts to exact probabilities; fails at p < 1e-3."""
    samples = counts.sum()
    expected = probabilities * samples
    keep = expected > 5  # chi-square validity; pool the rare tail
    observed = torch.cat([counts[keep], counts[~keep].sum()[None]])
    expected = torch.cat([expected[keep], expected[~keep].sum()[None]])
    nonzero = expected > 0
    chi2 = (((observed - expected) ** 2)[nonzero] / expected[nonzero]).sum().item()
    dof = int(nonzero.sum()) - 1
    critical = dof * (1 - 2 / (9 * dof) + 3.09 * (2 / (9 * dof)) ** 0.5) ** 3  # Wilson-Hilferty, 0.999 quantile
    assert chi2 < critical, f"chi2={chi2:.1f} >= {critical:.1f} (dof={dof})"


CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def make_chat_tokenizer(corpus: list[str], vocab_size: int = 320) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained in code on `corpus`, with ChatML special tokens and chat template."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator([*corpus, "user assistant system"] * 5, trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, eos_token="<|im_end|>", pad_token="<|endoftext|>", unk_token="<|endoftext|>"
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    return tokenizer
