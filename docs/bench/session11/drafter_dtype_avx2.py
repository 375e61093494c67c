"""On an AVX2-only CPU, does a bf16 drafter beside the float32 target pay? Per-token time of plain generate and of
tree + copies with a float32 and a bf16 copy of the shipped drafter, in one process, the order alternating per
repetition (4 prompts, 128 new tokens, packed weights, 2 timed repetitions after one warm-up):

    .venv/bin/python docs/bench/session11/drafter_dtype_avx2.py
"""

import statistics
import time

import torch

import coral_hf

PROMPTS = (
    "Write a Python function `is_prime(n)` that returns True if n is prime.",
    "Write a Python function that merges two sorted lists into one sorted list.",
    "Explain the difference between a list and a tuple in Python.",
    "Give me three tips for writing a good cover letter.",
)

torch.set_num_threads(2)
target, tokenizer = coral_hf.load_target("smollm2-135m-instruct")
coral_hf.pack_linear_weights(target)
drafters = {}
for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
    drafters[name] = coral_hf.load_drafter("smollm2-135m-instruct", target=target).to(dtype)
    coral_hf.pack_linear_weights(drafters[name])
ms_per_token = {mode: [] for mode in ("plain", "fp32", "bf16")}
tau = {mode: [] for mode in drafters}
for repetition in range(3):
    for prompt in PROMPTS:
        inputs = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        prompt_length = inputs["input_ids"].shape[1]
        for mode in ("plain", "fp32", "bf16") if repetition % 2 == 0 else ("bf16", "fp32", "plain"):
            kwargs = {} if mode == "plain" else {"custom_generate": coral_hf.tree_generate, "drafter": drafters[mode]}
            start = time.perf_counter()
            out = target.generate(**inputs, max_new_tokens=128, do_sample=False, **kwargs)
            elapsed = time.perf_counter() - start
            if repetition:  # the first pass is warm-up
                new_tokens = out.shape[1] - prompt_length
                ms_per_token[mode].append(elapsed / new_tokens * 1000)
                if mode != "plain":
                    tau[mode].append(new_tokens / (drafters[mode].last_generation_stats["rounds"] + 1))
plain = statistics.median(ms_per_token["plain"])
for mode, times in ms_per_token.items():
    line = f"{mode}: {statistics.median(times):.2f} ms/token, speedup {plain / statistics.median(times):.3f}"
    print(line + (f", tau {statistics.mean(tau[mode]):.3f}" if mode in tau else ""))
ratios = [fp32 / bf16 for fp32, bf16 in zip(ms_per_token["fp32"], ms_per_token["bf16"], strict=True)]
print(f"per call, fp32 / bf16 drafter time: median {statistics.median(ratios):.3f}")
