"""Plain greedy `generate` of the embedded SmolLM2 in float32 and bf16, packed and stock weights, interleaved.

On a CPU without native bf16 a one-token bf16 forward (bound by memory) can beat float32 while a forward over
several tokens costs several times more (verification-tree-avx2.json): this says what plain bf16 decoding gives
such a CPU, the baseline a user may compare speculation in float32 against. 3 prompts x 3 passes (the first is
warm-up), 96 new tokens each (min_new_tokens=96, so every call times the same length).

    .venv/bin/python docs/bench/session10/plain_dtypes.py > docs/bench/session10/plain-dtypes-avx2.json
"""

import json
import statistics
import time

import torch

import coral_hf
from coral_hf.eval.bench import machine_info

torch.set_num_threads(2)
variants = {
    "float32-packed": (torch.float32, True),
    "float32-stock": (torch.float32, False),
    "bfloat16-stock": (torch.bfloat16, False),
}
models = {}
for name, (dtype, pack) in variants.items():
    models[name], tokenizer = coral_hf.load_target(dtype=dtype, pack_weights=pack)
prompts = [
    "Write a Python function that checks whether a string is a palindrome.",
    "Explain in three sentences why the sky is blue.",
    "Give me a short recipe for pancakes.",
]
speeds = {name: [] for name in models}
with torch.no_grad():
    for rotation in range(3):
        for prompt in prompts:
            inputs = tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}],
                add_generation_prompt=True,
                return_tensors="pt",
                return_dict=True,
            )
            names = list(models)[rotation:] + list(models)[:rotation]
            for name in names:
                start = time.perf_counter()
                models[name].generate(**inputs, max_new_tokens=96, min_new_tokens=96, do_sample=False)
                if rotation:
                    speeds[name].append(96 / (time.perf_counter() - start))
result = {name: round(statistics.median(values), 2) for name, values in speeds.items()}
print(json.dumps({"tokens_per_s_median": result, "machine": machine_info(torch.device("cpu"))}, indent=1))
