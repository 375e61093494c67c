"""Per-token time of plain generate, the drafter chain and tree + copies on two code prompts (96 new tokens, fp32,
packed weights, 3 timed repetitions after one warm-up), for runs alternating between a transformers 5.23 and a 5.25
environment (the log beside it):

    for i in 1 2; do for venv in .venv /tmp/t525/.venv; do
      $venv/bin/python docs/bench/session11/transformers_versions.py; done; done
"""

import statistics
import time

import torch
import transformers

import coral_hf

PROMPTS = (
    "Write a Python function `is_prime(n)` that returns True if n is prime.",
    "Write a Python function that merges two sorted lists into one sorted list.",
)

torch.set_num_threads(2)
target, tokenizer = coral_hf.load_target("smollm2-135m-instruct")
drafter = coral_hf.load_drafter("smollm2-135m-instruct", target=target)
for model in (target, drafter):
    coral_hf.pack_linear_weights(model)
drafter.to(torch.float32)
modes = {
    "plain": {},
    "chain": {"assistant_model": drafter},
    "tree": {"custom_generate": coral_hf.tree_generate, "drafter": drafter},
}
ms_per_token = {mode: [] for mode in modes}
for repetition in range(4):
    for prompt in PROMPTS:
        inputs = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        for mode, kwargs in modes.items():
            start = time.perf_counter()
            out = target.generate(**inputs, max_new_tokens=96, do_sample=False, **kwargs)
            elapsed = time.perf_counter() - start
            if repetition:  # the first pass is warm-up
                ms_per_token[mode].append(elapsed / (out.shape[1] - inputs["input_ids"].shape[1]) * 1000)
median = {mode: statistics.median(times) for mode, times in ms_per_token.items()}
speedups = {mode: round(median["plain"] / median[mode], 3) for mode in ("chain", "tree")}
print(transformers.__version__, {mode: round(value, 2) for mode, value in median.items()}, speedups)
