"""The speed / acceptance benchmark: plain `generate`, a CORAL drafter and prompt-lookup decoding, side by side.

Measurement rules (DESIGN.md section 5), because the machines this runs on are shared and noisy:

- All modes run in the same process, on the same prompts, **interleaved per turn** in a rotating order (plain,
  drafter, prompt lookup; then drafter, prompt lookup, plain; ...), after untimed warm-up generations, so slow
  phases of the machine hit every mode alike.
- `time.perf_counter()` brackets `generate` only (tokenisation, decoding and checks are outside the timed region).
- Speed is compared as ratios (drafter tokens/s over plain tokens/s of the same prompt), summarised by medians over
  prompts, never as absolute times from different runs.
- tau = generated tokens / target forwards, counting the target's own (bonus) token of every round. Target forwards
  and their per-round gains (the histogram) come from a streamer, which transformers' assisted decoding calls once
  per round with the tokens that round produced; they are cross-checked against
  `drafter.last_generation_stats["rounds"]`.
- Greedy outputs of the assisted modes are compared token by token with plain greedy decoding; the first divergence
  is reported with the target's top-2 logit gap at that position (a tiny gap points to floating-point noise between
  one-token and multi-token target forwards, a large one to a bug). float32 is strict: any difference fails. In
  bfloat16 / float16 every call keeps the scores it chose its tokens by (`output_scores`), and a divergence is a
  numerical tie only when each call took its own argmax and the plain call ranks the two tokens within two units in
  the last place of the dtype, or the target itself does (or ranks them the other way round) in one of the shapes
  speculative decoding computes that position in (`first_divergence`, `coral_hf.eval.ties`).

Library use: `run_bench(target, tokenizer, drafter, prompts, max_new_tokens=..., ...)` returns a [`BenchResult`],
whose `summary()` is the JSON written by `coral-hf bench --json`.
"""

from __future__ import annotations

import copy
import math
import os
import platform
import random
import statistics
import sys
import time
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import transformers
from tqdm.auto import tqdm
from transformers import PreTrainedModel, PreTrainedTokenizerBase
from transformers.generation.streamers import BaseStreamer

from ..generation import copy_only_after as resolved_copy_only_after
from ..generation import copy_only_tokens as resolved_copy_only_tokens
from ..generation import datastore_settings
from ..modeling_coral import CoralDrafter
from ..targets import cpu_flags
from ..tree_decoding import TREE_SETTINGS, tree_generate, tree_settings
from .prompts import PromptItem
from .ties import is_low_precision, is_numerical_tie, pair_gaps_by_shape
from .timing import time_draft_step

PLAIN, DRAFTER, PROMPT_LOOKUP, HYBRID = "plain", "drafter", "prompt_lookup", "hybrid"
TREE, TREE_HYBRID = "tree", "tree_hybrid"  # the drafter's dynamic tree (`coral_hf.tree_generate`), + a copy branch
MODES = (PLAIN, DRAFTER, PROMPT_LOOKUP, HYBRID, TREE, TREE_HYBRID)
ASSISTED_MODES = (DRAFTER, PROMPT_LOOKUP, HYBRID, TREE, TREE_HYBRID)
DRAFTER_MODES = (DRAFTER, HYBRID, TREE, TREE_HYBRID)  # modes that run the drafter
TREE_MODES = (TREE, TREE_HYBRID)
BASELINE_MODES = (
    PROMPT_LOOKUP,
    HYBRID,
    TREE,
    TREE_HYBRID,
)  # reported next to the chain drafter, one sub-document each
DECODINGS = ("chain", "tree")
PROMPT_LOOKUP_NGRAM = 2  # transformers' default `max_matching_ngram_size`


class RoundRecorder(BaseStreamer):
    """Records how many tokens each target forward adds to the sequence, and when the first ones arrived.

    `generate` first puts the prompt, then assisted decoding puts once per round the tokens that round produced:
    the accepted draft tokens plus the target's own token. Those sizes are the per-round acceptance (+1). Plain
    decoding puts one token per forward. `first_put_time` (`time.perf_counter()`) marks the end of the first target
    forward over the prompt (the prefill), which speculation cannot shorten.
    """

    def __init__(self) -> None:
        self.round_sizes: list[int] = []
        self.first_put_time: float | None = None
        self._prompt_seen = False

    def put(self, value: torch.Tensor) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        if self.first_put_time is None:
            self.first_put_time = time.perf_counter()
        self.round_sizes.append(int(value.numel()))

    def end(self) -> None:
        pass


@dataclass
class TurnRun:
    """One timed `generate` call: a single turn of one prompt in one mode.

    `first_seconds` is the time to the first streamed tokens (the target's forward over the prompt: prefill plus, in
    assisted modes, the first round's draft) and `first_tokens` how many that forward produced; the rest of the
    call is the decoding phase that speculation speeds up. `scores` (`[new_tokens, vocab]`, kept only where the
    lossless check needs them) are the processed logits the call chose each token by.
    """

    token_ids: list[int]
    seconds: float
    rounds: int
    round_sizes: list[int] = field(default_factory=list)
    first_seconds: float = 0.0
    first_tokens: int = 0
    scores: torch.Tensor | None = field(default=None, repr=False)

    @property
    def new_tokens(self) -> int:
        return len(self.token_ids)

    @property
    def decode_tokens(self) -> int:
        return self.new_tokens - self.first_tokens

    @property
    def decode_seconds(self) -> float:
        return self.seconds - self.first_seconds


@dataclass
class Divergence:
    """Where a greedy assisted output first differs from plain greedy decoding, and how close the target was to a tie.

    `position` indexes the generated tokens of that turn. `top2_logit_gap` is the target's top-1 minus top-2 logit at
    that position (computed on the plain prefix, one full forward); `logit_gap` is plain token minus other token.
    `plain_call_gap` and `speculative_call_gap` are the same pair's gaps in the scores each call chose by (plain
    token minus other token in the plain call, other minus plain in the speculative one), when the calls kept them.
    `shape_gaps` (plain minus other) are the target's own evaluations of the prefix in the shapes speculative
    decoding uses, computed when the plain call's gap exceeds the dtype bound (`coral_hf.eval.ties`).
    """

    prompt_id: str
    turn: int
    mode: str
    position: int
    plain_token: int
    other_token: int
    plain_piece: str
    other_piece: str
    context: str
    top2_logit_gap: float
    logit_gap: float
    dtype: str = "float32"
    tie: bool = False
    plain_call_gap: float | None = None
    speculative_call_gap: float | None = None
    shape_gaps: dict[str, float] | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class PromptResult:
    """All runs of one prompt: `runs[mode][turn]`, the decoded `responses[mode][turn]`, and the lossless check."""

    id: str
    category: str
    runs: dict[str, list[TurnRun]]
    responses: dict[str, list[str]]
    identical: dict[str, int] = field(default_factory=dict)
    ties: dict[str, int] = field(default_factory=dict)
    compared: int = 0

    def tokens(self, mode: str) -> int:
        return sum(run.new_tokens for run in self.runs[mode])

    def seconds(self, mode: str) -> float:
        return sum(run.seconds for run in self.runs[mode])

    def rounds(self, mode: str) -> int:
        return sum(run.rounds for run in self.runs[mode])

    def tokens_per_s(self, mode: str) -> float:
        return self.tokens(mode) / self.seconds(mode)

    def speedup(self, mode: str) -> float:
        """Tokens/s of `mode` over tokens/s of plain decoding, on this prompt."""
        return self.tokens_per_s(mode) / self.tokens_per_s(PLAIN)

    def first_token_seconds(self, mode: str) -> float:
        """Mean time to the first generated tokens over this prompt's turns (the prefill forward)."""
        return sum(run.first_seconds for run in self.runs[mode]) / len(self.runs[mode])

    def decode_tokens_per_s(self, mode: str) -> float:
        """Tokens/s after the first target forward (prefill excluded); NaN when no turn had tokens after it."""
        tokens = sum(run.decode_tokens for run in self.runs[mode])
        seconds = sum(run.decode_seconds for run in self.runs[mode])
        return tokens / seconds if tokens > 0 and seconds > 0 else math.nan

    def decode_speedup(self, mode: str) -> float:
        """Decoding-phase tokens/s of `mode` over plain's, on this prompt: the speedup without the prefill, which
        both pay alike (and which dominates short generations from long prompts)."""
        return self.decode_tokens_per_s(mode) / self.decode_tokens_per_s(PLAIN)

    def tau(self, mode: str) -> float:
        return self.tokens(mode) / max(self.rounds(mode), 1)

    def to_dict(self) -> dict[str, Any]:
        assisted = [mode for mode in ASSISTED_MODES if mode in self.runs]
        return {
            "id": self.id,
            "category": self.category,
            "turns": len(self.runs[PLAIN]),
            "tokens": {mode: self.tokens(mode) for mode in self.runs},
            "seconds": {mode: round(self.seconds(mode), 6) for mode in self.runs},
            "tokens_per_s": {mode: round(self.tokens_per_s(mode), 3) for mode in self.runs},
            "rounds": {mode: self.rounds(mode) for mode in self.runs},
            "tau": {mode: round(self.tau(mode), 4) for mode in assisted},
            "speedup": {mode: round(self.speedup(mode), 4) for mode in assisted},
            "first_token_s": {mode: round(self.first_token_seconds(mode), 6) for mode in self.runs},
            "decode_speedup": {mode: _number(round(self.decode_speedup(mode), 4)) for mode in assisted},
            "identical": dict(self.identical),
            "ties": dict(self.ties),
            "compared": self.compared,
        }


def _histogram(prompts: Sequence[PromptResult], mode: str) -> dict[int, int]:
    """Number of target forwards that gained 1, 2, ... tokens (all sizes from 1 to the largest seen)."""
    counts = Counter(size for prompt in prompts for run in prompt.runs[mode] for size in run.round_sizes)
    return {size: counts.get(size, 0) for size in range(1, max(counts, default=0) + 1)}


def _number(value: float) -> float | None:
    """`value`, or None for NaN (JSON has no NaN)."""
    return None if math.isnan(value) else value


def _median(values: Iterable[float]) -> float | None:
    """Median of the values that are not NaN (None when none is: JSON has no NaN)."""
    kept = [value for value in values if not math.isnan(value)]
    return statistics.median(kept) if kept else None


def median_interval(
    values: Sequence[float], confidence: float = 0.95, resamples: int = 2000, seed: int = 0
) -> tuple[float, float] | None:
    """Bootstrap percentile interval of the median of `values` (one per prompt): where the median speedup could
    land with another draw of prompts of the same kind. Which prompts a set holds moves a median more than the timing
    noise of each prompt does (short answers gain least), so a run's headline median comes with this interval.
    Seeded, so a report is reproducible; None under 3 values.
    """
    if len(values) < 3:
        return None
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}.")
    generator = random.Random(seed)
    medians = sorted(statistics.median(generator.choices(values, k=len(values))) for _ in range(resamples))
    tail = (1.0 - confidence) / 2.0
    return medians[int(tail * resamples)], medians[min(int((1.0 - tail) * resamples), resamples - 1)]


def aggregate(prompts: Sequence[PromptResult], modes: Sequence[str]) -> dict[str, Any]:
    """Summary numbers of a group of prompts (the whole run or one category).

    tokens/s and speedups are medians over prompts of per-prompt values (each prompt's tokens over its summed
    `generate` time); tau pools all rounds of the group (total tokens / total target forwards). The `decode_`
    numbers leave out each call's first target forward (the prefill, see [`TurnRun`]); `first_token_s` is the
    median over prompts of the mean time to the first tokens. `speedup_interval` is the 95% bootstrap interval of
    the median speedup over prompts ([`median_interval`], None under 3 prompts).
    """
    summary: dict[str, Any] = {
        "prompts": len(prompts),
        "generations": sum(len(prompt.runs[PLAIN]) for prompt in prompts),
        "tokens": {mode: sum(prompt.tokens(mode) for prompt in prompts) for mode in modes},
        "tokens_per_s": {mode: statistics.median(prompt.tokens_per_s(mode) for prompt in prompts) for mode in modes},
        "decode_tokens_per_s": {
            mode: _median(prompt.decode_tokens_per_s(mode) for prompt in prompts) for mode in modes
        },
        "first_token_s": {
            mode: statistics.median(prompt.first_token_seconds(mode) for prompt in prompts) for mode in modes
        },
    }
    for mode in ASSISTED_MODES:
        if mode not in modes:
            continue
        tokens = sum(prompt.tokens(mode) for prompt in prompts)
        rounds = sum(prompt.rounds(mode) for prompt in prompts)
        speedups = [prompt.speedup(mode) for prompt in prompts]
        numbers = {
            "tau": tokens / rounds,
            "rounds": rounds,
            "tau_histogram": _histogram(prompts, mode),
            "speedup_median": statistics.median(speedups),
            "speedup_interval": median_interval(speedups),
            "decode_speedup_median": _median(prompt.decode_speedup(mode) for prompt in prompts),
            "identical": sum(prompt.identical.get(mode, 0) for prompt in prompts),
            "ties": sum(prompt.ties.get(mode, 0) for prompt in prompts),
            "compared": sum(prompt.compared for prompt in prompts),
        }
        if mode == DRAFTER:
            summary.update(numbers)
        else:
            summary[mode] = numbers
    return summary


@dataclass
class BenchResult:
    """Everything one benchmark run measured. `summary()` is the JSON document of `coral-hf bench --json`."""

    prompts: list[PromptResult]
    modes: tuple[str, ...]
    divergences: list[Divergence]
    settings: dict[str, Any]
    machine: dict[str, Any]
    draft_length: int
    followeval: dict[str, Any] | None = None
    draft_timing: dict[str, float] | None = None

    def categories(self) -> dict[str, list[PromptResult]]:
        grouped: dict[str, list[PromptResult]] = {}
        for prompt in self.prompts:
            grouped.setdefault(prompt.category, []).append(prompt)
        return grouped

    def summary(self) -> dict[str, Any]:
        document = aggregate(self.prompts, self.modes)
        document["draft_length"] = self.draft_length
        if self.draft_timing is not None:
            document.update(self.draft_timing)
        document["categories"] = {name: aggregate(group, self.modes) for name, group in self.categories().items()}
        document["divergences"] = [divergence.to_dict() for divergence in self.divergences]
        if self.followeval is not None:
            document["followeval"] = self.followeval
        document["settings"] = self.settings
        document["machine"] = self.machine
        document["per_prompt"] = [prompt.to_dict() for prompt in self.prompts]
        return document


_SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16")


def machine_info(device: torch.device) -> dict[str, Any]:
    """What the numbers were measured on: CPU and its vector flags, thread settings, library versions, load
    average."""
    info: dict[str, Any] = {
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "cpu": _cpu_name(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "device": str(device),
    }
    flags = cpu_flags()
    if flags is not None:  # the vector units decide what a multi-token forward and bf16 cost
        info["cpu_flags"] = [flag for flag in _SPEED_FLAGS if flag in flags]
    if hasattr(os, "sched_getaffinity"):
        info["usable_cpus"] = len(os.sched_getaffinity(0))
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    if hasattr(os, "getloadavg"):
        info["load_average_start"] = [round(value, 2) for value in os.getloadavg()]
    return info


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def encode_chat(
    tokenizer: PreTrainedTokenizerBase, messages: list[dict[str, str]], device: torch.device | str = "cpu"
) -> torch.Tensor:
    """`[1, length]` input ids of a chat (`messages`) with the generation prompt, as every benchmark mode sees it."""
    if tokenizer.chat_template is None:
        raise ValueError(
            "The benchmark formats prompts with the tokenizer's chat template, and this tokenizer has none. "
            "Benchmark an instruction-tuned target, or set `tokenizer.chat_template`."
        )
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids.to(device)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Runner:
    """Runs one turn in one mode with identical inputs and generation settings for every mode."""

    def __init__(
        self,
        target: PreTrainedModel,
        drafter: CoralDrafter,
        *,
        max_new_tokens: int,
        temperature: float,
        prompt_lookup_tokens: int | None,
        hybrid_tokens: int | None = None,
        datastore_tokens: int = 0,
        keep_scores: bool = False,
    ):
        self.target = target
        self.drafter = drafter
        self.hybrid_tokens = hybrid_tokens
        self.datastore_tokens = datastore_tokens
        self.keep_scores = keep_scores
        self.device = target.device
        config = copy.deepcopy(target.generation_config)
        config.max_new_tokens = max_new_tokens
        config.max_length = None
        config.min_new_tokens = None
        config.num_beams = 1
        if temperature > 0:
            # Pure temperature sampling: no top-k / top-p truncation, so q and p differ only by the models.
            config.do_sample, config.temperature, config.top_k, config.top_p = True, temperature, 0, 1.0
        else:
            config.do_sample, config.temperature, config.top_k, config.top_p = False, None, None, None
        if config.pad_token_id is None:
            config.pad_token_id = config.eos_token_id
        if keep_scores:
            # One float row per generated token, copied out of logits every mode computes anyway.
            config.return_dict_in_generate, config.output_scores = True, True
        self.configs = {mode: config for mode in (PLAIN, *DRAFTER_MODES)}
        if prompt_lookup_tokens is not None:
            self.configs[PROMPT_LOOKUP] = copy.deepcopy(config)
            self.configs[PROMPT_LOOKUP].prompt_lookup_num_tokens = prompt_lookup_tokens
            self.configs[PROMPT_LOOKUP].max_matching_ngram_size = PROMPT_LOOKUP_NGRAM

    def __call__(self, mode: str, input_ids: torch.Tensor, seed: int) -> TurnRun:
        # Every mode streams into a recorder (one put per token in plain decoding), which times the first tokens.
        recorder = RoundRecorder()
        kwargs: dict[str, Any] = {"streamer": recorder}
        if mode in DRAFTER_MODES:
            # The same drafter alone, or with prompt-lookup copies (read when its generation starts).
            hybrid = mode in (HYBRID, TREE_HYBRID)
            self.drafter.generation_config.prompt_lookup_num_tokens = self.hybrid_tokens if hybrid else None
            # A datastore proposal is a copy too: the modes with copies propose it, the drafter alone does not.
            self.drafter.generation_config.datastore_tokens = self.datastore_tokens if hybrid else 0
        if mode in (DRAFTER, HYBRID):
            kwargs["assistant_model"] = self.drafter
        if mode in TREE_MODES:
            # transformers does not hand `streamer=` to a custom_generate callable: tree_generate takes its own.
            kwargs = {"custom_generate": tree_generate, "drafter": self.drafter, "tree_streamer": recorder}
        attention_mask = torch.ones_like(input_ids)
        torch.manual_seed(seed)
        _sync(self.device)
        start = time.perf_counter()
        output = self.target.generate(
            input_ids=input_ids, attention_mask=attention_mask, generation_config=self.configs[mode], **kwargs
        )
        _sync(self.device)
        seconds = time.perf_counter() - start
        scores = None
        if self.keep_scores:
            output, scores = output.sequences, torch.cat(output.scores).float()
        token_ids = output[0, input_ids.shape[1] :].tolist()
        first = {
            "first_seconds": (recorder.first_put_time or start + seconds) - start,
            "first_tokens": recorder.round_sizes[0] if recorder.round_sizes else len(token_ids),
            "scores": scores,
        }
        if mode == PLAIN:  # one target forward per token
            return TurnRun(token_ids=token_ids, seconds=seconds, rounds=len(token_ids), **first)
        if mode in (DRAFTER, HYBRID):
            self._check_draft_rounds(len(recorder.round_sizes))
        elif mode in TREE_MODES and len(recorder.round_sizes) != self.drafter.last_generation_stats["rounds"] + 1:
            raise RuntimeError("The tree decoder's round count disagrees with the streamed target forwards.")
        return TurnRun(
            token_ids=token_ids,
            seconds=seconds,
            rounds=len(recorder.round_sizes),
            round_sizes=recorder.round_sizes,
            **first,
        )

    def _check_draft_rounds(self, target_forwards: int) -> None:
        """Cross-check the streamed target forwards against the drafter's own round count.

        transformers skips the drafter when the token budget leaves room for a single token (the target's own), so
        the drafter may count one round less than the target ran; any other difference means the two disagree.
        """
        draft_rounds = self.drafter.last_generation_stats["rounds"]
        if target_forwards - draft_rounds not in (0, 1):
            raise RuntimeError(
                f"The target ran {target_forwards} forwards but the drafter counted {draft_rounds} rounds: the "
                "drafter and transformers' assisted decoding disagree on the rounds of this generation."
            )


@torch.no_grad()
def first_divergence(
    target: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    input_ids: torch.Tensor,
    plain: list[int],
    other: list[int],
    *,
    prompt_id: str,
    turn: int,
    mode: str,
    plain_scores: torch.Tensor | None = None,
    other_scores: torch.Tensor | None = None,
) -> Divergence | None:
    """The first position where `other` differs from `plain` (None if identical), with the target's logit gaps.

    Whether a low-precision divergence is a numerical tie is decided on the scores each call chose its tokens by,
    when given (`[new_tokens, vocab]` each, e.g. `generate(..., output_scores=True)`): each call must have taken its
    own argmax (anything else is a bug), and the plain call must rank the pair within the dtype's bound
    (`is_numerical_tie`) or, failing that, the target itself must rank it within the bound or the other way round
    in one of the shapes speculative decoding computes it in (`pair_gaps_by_shape`). Without the calls' scores,
    on the target's top-2 gap in one full forward over the prefix. float32 is strict: never a tie.
    """
    position = next((i for i, (a, b) in enumerate(zip(plain, other, strict=False)) if a != b), None)
    if position is None:
        if len(plain) == len(other):
            return None
        position = min(len(plain), len(other))  # one output stops early: compare at its end
    prefix = torch.tensor([plain[:position]], dtype=input_ids.dtype, device=input_ids.device)
    logits = target(input_ids=torch.cat([input_ids, prefix], dim=1), use_cache=False).logits[0, -1].float()
    top2 = logits.topk(2).values
    plain_token = plain[position] if position < len(plain) else -1
    other_token = other[position] if position < len(other) else -1

    def piece(token: int) -> str:
        return "<end>" if token < 0 else tokenizer.decode([token])

    both = min(plain_token, other_token) >= 0
    tie = both and is_numerical_tie(float(top2[0]), float(top2[1]), target.dtype)
    plain_call_gap = speculative_call_gap = shape_gaps = None
    if both and plain_scores is not None and other_scores is not None:
        plain_row, other_row = plain_scores[position].float(), other_scores[position].float()
        plain_call_gap = float(plain_row[plain_token] - plain_row[other_token])
        speculative_call_gap = float(other_row[other_token] - other_row[plain_token])
        own_argmax = bool(plain_row[plain_token] == plain_row.max() and other_row[other_token] == other_row.max())
        top = float(plain_row[plain_token])
        tie = own_argmax and is_numerical_tie(top, float(plain_row[other_token]), target.dtype)
        if own_argmax and not tie and is_low_precision(target.dtype):
            shape_gaps = pair_gaps_by_shape(target, input_ids, plain[:position], plain_token, other_token)
            tie = any(is_numerical_tie(top, top - gap, target.dtype) for gap in shape_gaps.values())
    return Divergence(
        prompt_id=prompt_id,
        turn=turn,
        mode=mode,
        position=position,
        plain_token=plain_token,
        other_token=other_token,
        plain_piece=piece(plain_token),
        other_piece=piece(other_token),
        context=tokenizer.decode(plain[max(0, position - 12) : position]),
        top2_logit_gap=float(top2[0] - top2[1]),
        logit_gap=float(logits[plain_token] - logits[other_token]) if min(plain_token, other_token) >= 0 else 0.0,
        dtype=str(target.dtype).removeprefix("torch."),
        tie=tie,
        plain_call_gap=plain_call_gap,
        speculative_call_gap=speculative_call_gap,
        shape_gaps=shape_gaps,
    )


def run_bench(
    target: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    drafter: CoralDrafter,
    prompts: Sequence[PromptItem],
    *,
    max_new_tokens: int = 128,
    temperature: float = 0.0,
    warmup: int = 1,
    repeats: int = 1,
    prompt_lookup_tokens: int | None = 10,
    hybrid_tokens: int | None = None,
    draft_length: int | None = None,
    confidence_threshold: float | None = None,
    copy_only_after: int | None = None,
    copy_only_tokens: int | None = None,
    decoding: Sequence[str] = ("chain",),
    tree_overrides: Mapping[str, float] | None = None,
    datastore: bool = True,
    seed: int = 0,
    progress: bool = False,
    draft_step_repetitions: int = 100,
    metadata: Mapping[str, Any] | None = None,
) -> BenchResult:
    """Benchmark `drafter` against plain decoding (and prompt-lookup decoding) on `prompts`.

    Every turn of every prompt is generated once per mode (`repeats` times with `repeats` > 1), in a rotating order,
    from identical inputs. Later turns of a multi-turn prompt see the plain run's earlier answers as history in every
    mode, so inputs stay identical.

    Args:
        target: the causal LM (batch size 1; its device and dtype are used as they are).
        tokenizer: the target's tokenizer, with a chat template.
        drafter: an attached drafter (`assistant_model` for `target.generate`).
        prompts: prompt items (see `coral_hf.eval.prompts.load_prompts`).
        max_new_tokens: generation budget per turn (generation also stops at EOS).
        temperature: 0 = greedy with the lossless check; > 0 = pure temperature sampling (no identity check).
        warmup: untimed warm-up generations per mode, on the first prompt, before measuring.
        repeats: timed generations per mode and turn, interleaved (every mode once, then again, each pass in a new
            rotation); the call with the median time is kept. One call of a turn can read ~10% off on a shared
            machine, so repeats steady per-turn speedups at the price of a run `repeats` times as long.
        prompt_lookup_tokens: `prompt_lookup_num_tokens` of the prompt-lookup baseline; `None` skips that mode.
        hybrid_tokens: also run the drafter with prompt-lookup copies of up to this many tokens (the `hybrid` mode,
            `drafter.generation_config.prompt_lookup_num_tokens`); `None` skips it. The `drafter` mode always runs
            the drafter alone.
        draft_length: draft tokens per round, overriding `drafter.generation_config.num_assistant_tokens` for the run.
        confidence_threshold: the chain's `assistant_confidence_threshold` (stop drafting below it), overriding the
            drafter's for the run.
        copy_only_after: the hybrid modes' `copy_only_after` (see `CoralConfig`), overriding the drafter's for the run.
        copy_only_tokens: the hybrid modes' `copy_only_tokens` (see `CoralConfig`), overriding the drafter's.
        decoding: `("chain",)` runs the chain modes; with `"tree"` the drafter also decodes with its dynamic tree
            (the `tree` mode, and `tree_hybrid` with a prompt-lookup branch when `hybrid_tokens` is set), side by
            side with the chain in the same run.
        tree_overrides: `tree_total_tokens` / `tree_depth` / `tree_top_k` / `tree_confidence_threshold` /
            `tree_unmatched_copy_tokens` overriding the drafter's generation config for the run.
        datastore: whether the modes with copies (`hybrid`, `tree_hybrid`) also propose the drafter's datastore
            continuations (when it has a datastore, see `coral_hf.datastore`); `drafter` and `tree` never do: they
            measure the drafter alone.
        seed: base seed; every turn reseeds all modes with the same value before `generate`.
        progress: show a tqdm progress bar.
        draft_step_repetitions: timed draft steps (`coral_hf.eval.timing.time_draft_step`, after the generations) for
            the `draft_step_ms` / `layer_ms` / `lm_head_ms` medians in the drafter's head mode; 0 skips them.
        metadata: descriptive entries recorded in `settings` and shown in reports, e.g. `{"target": ...,
            "drafter": ..., "prompts": ..., "drafter_is_random": True}`.
    """
    if not prompts:
        raise ValueError("No prompts to benchmark.")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    modes = (PLAIN, DRAFTER)
    modes += (PROMPT_LOOKUP,) if prompt_lookup_tokens is not None else ()
    modes += (HYBRID,) if hybrid_tokens is not None else ()
    unknown = set(decoding) - set(DECODINGS)
    if unknown or not decoding:
        raise ValueError(f"decoding must be a non-empty subset of {DECODINGS}, got {tuple(decoding)}.")
    if "tree" in decoding:
        modes += (TREE,) + ((TREE_HYBRID,) if hybrid_tokens is not None else ())
    device = target.device
    lossless_check = temperature <= 0
    machine = machine_info(device)
    drafter_config = drafter.generation_config
    original_draft_length = drafter_config.num_assistant_tokens
    original_threshold = drafter_config.assistant_confidence_threshold
    original_lookup_tokens = getattr(drafter_config, "prompt_lookup_num_tokens", None)
    original_tree = {name: getattr(drafter_config, name, None) for name in TREE_SETTINGS}
    original_copy_only_after = getattr(drafter_config, "copy_only_after", None)
    original_copy_only_tokens = getattr(drafter_config, "copy_only_tokens", None)
    original_datastore_tokens = getattr(drafter_config, "datastore_tokens", None)
    datastore_tokens = 0
    if datastore and drafter.datastore is not None and (HYBRID in modes or TREE_HYBRID in modes):
        datastore_tokens = datastore_settings(drafter)["datastore_tokens"]
    if draft_length is not None:
        drafter_config.num_assistant_tokens = draft_length
    if confidence_threshold is not None:
        drafter_config.assistant_confidence_threshold = float(confidence_threshold)
    if copy_only_after is not None:
        drafter_config.copy_only_after = int(copy_only_after)
    if copy_only_tokens is not None:
        drafter_config.copy_only_tokens = int(copy_only_tokens)
    for name, value in (tree_overrides or {}).items():
        if name not in TREE_SETTINGS:
            raise ValueError(f"Unknown tree setting {name!r}; expected one of {TREE_SETTINGS}.")
        setattr(drafter_config, name, value)
    runner = _Runner(
        target,
        drafter,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        prompt_lookup_tokens=prompt_lookup_tokens,
        hybrid_tokens=hybrid_tokens,
        datastore_tokens=datastore_tokens,
        # Low precision: a divergence may be a numerical tie, judged on the scores each call chose by.
        keep_scores=lossless_check and target.dtype not in (torch.float32, torch.float64),
    )
    settings = {
        "max_new_tokens": max_new_tokens,
        "temperature": temperature,
        "sampling": "temperature only (top_k=0, top_p=1)" if temperature > 0 else "greedy",
        "lossless_check": lossless_check,
        "warmup": warmup,
        "repeats": repeats,
        "seed": seed,
        "draft_length": int(drafter_config.num_assistant_tokens),
        "drafter_head": drafter.head_mode,
        "confidence_threshold": float(drafter_config.assistant_confidence_threshold or 0.0),
        "prompt_lookup_tokens": prompt_lookup_tokens,
        "prompt_lookup_max_ngram": PROMPT_LOOKUP_NGRAM if prompt_lookup_tokens is not None else None,
        "hybrid_tokens": hybrid_tokens,
        "hybrid_copy_confidence": float(getattr(drafter_config, "copy_confidence", None) or 0.0),
        "hybrid_copy_only_after": resolved_copy_only_after(drafter),
        "hybrid_copy_only_tokens": resolved_copy_only_tokens(drafter, hybrid_tokens) if hybrid_tokens else None,
        **(tree_settings(drafter) if "tree" in decoding else {}),
        "datastore": (
            {"source": drafter.datastore.source, "tokens": len(drafter.datastore), **datastore_settings(drafter)}
            if datastore_tokens
            else None
        ),
        "modes": list(modes),
        "order": "interleaved per turn, rotating",
        "dtype": str(target.dtype).removeprefix("torch."),
        "device": str(device),
        **(metadata or {}),
    }
    results: list[PromptResult] = []
    divergences: list[Divergence] = []
    try:
        warmup_ids = encode_chat(tokenizer, [{"role": "user", "content": prompts[0].turns[0]}], device)
        for index in range(warmup):
            for mode in modes:
                runner(mode, warmup_ids, seed + index)
        counter = 0
        bar = tqdm(prompts, desc="bench", unit="prompt", disable=not progress, file=sys.stderr)
        for item in bar:
            result = PromptResult(
                id=item.id,
                category=item.category,
                runs={mode: [] for mode in modes},
                responses={mode: [] for mode in modes},
                identical={mode: 0 for mode in modes if mode != PLAIN} if lossless_check else {},
            )
            history: list[dict[str, str]] = []
            for turn, text in enumerate(item.turns):
                history.append({"role": "user", "content": text})
                input_ids = encode_chat(tokenizer, history, device)
                turn_seed = seed + 1000 * len(results) + turn
                calls: dict[str, list[TurnRun]] = {mode: [] for mode in modes}
                for _ in range(repeats):
                    order = modes[counter % len(modes) :] + modes[: counter % len(modes)]
                    for mode in order:
                        calls[mode].append(runner(mode, input_ids, turn_seed))
                    counter += 1
                for mode, runs in calls.items():
                    run = sorted(runs, key=lambda call: call.seconds)[len(runs) // 2]
                    result.runs[mode].append(run)
                    result.responses[mode].append(tokenizer.decode(run.token_ids, skip_special_tokens=True))
                if lossless_check:
                    result.compared += 1
                    plain_run = result.runs[PLAIN][-1]
                    for mode in modes[1:]:
                        found = first_divergence(
                            target,
                            tokenizer,
                            input_ids,
                            plain_run.token_ids,
                            result.runs[mode][-1].token_ids,
                            prompt_id=item.id,
                            turn=turn,
                            mode=mode,
                            plain_scores=plain_run.scores,
                            other_scores=result.runs[mode][-1].scores,
                        )
                        if found is None:
                            result.identical[mode] += 1
                        else:
                            divergences.append(found)
                            result.ties[mode] = result.ties.get(mode, 0) + int(found.tie)
                    for mode in modes:
                        result.runs[mode][-1].scores = None  # checked: free `[tokens, vocab]` per call
                history.append({"role": "assistant", "content": result.responses[PLAIN][-1]})
            results.append(result)
            bar.set_postfix(
                # Pooled tau only: `aggregate` would also bootstrap every mode's interval after each prompt.
                tau=f"{sum(p.tokens(DRAFTER) for p in results) / max(sum(p.rounds(DRAFTER) for p in results), 1):.2f}",
                speedup=f"{statistics.median(prompt.speedup(DRAFTER) for prompt in results):.2f}x",
            )
        draft_timing = time_draft_step(drafter, repetitions=draft_step_repetitions) if draft_step_repetitions else None
    finally:
        drafter_config.num_assistant_tokens = original_draft_length
        drafter_config.assistant_confidence_threshold = original_threshold
        drafter_config.prompt_lookup_num_tokens = original_lookup_tokens
        drafter_config.copy_only_after = original_copy_only_after
        drafter_config.copy_only_tokens = original_copy_only_tokens
        drafter_config.datastore_tokens = original_datastore_tokens
        for name, value in original_tree.items():
            setattr(drafter_config, name, value)
    if hasattr(os, "getloadavg"):
        machine["load_average_end"] = [round(value, 2) for value in os.getloadavg()]
    return BenchResult(
        prompts=results,
        modes=modes,
        divergences=divergences,
        settings=settings,
        machine=machine,
        draft_length=settings["draft_length"],
        draft_timing=draft_timing,
    )


def followeval_summary(result: BenchResult) -> dict[str, Any]:
    """FollowEval pass rates of the plain and drafter responses (last turn) of a run on the `followeval` prompts.

    The top level compares plain decoding with the chain drafter; `other_modes` holds the same comparison for every
    other assisted mode of the run (prompt lookup, hybrid, tree).
    """
    from .followeval import load_followeval, summarize

    instances = {instance.id: instance for instance in load_followeval()}
    missing = [prompt.id for prompt in result.prompts if prompt.id not in instances]
    if missing:
        raise ValueError(f"Prompts {missing[:5]} are not FollowEval instances; run the benchmark on `followeval`.")
    chosen = [instances[prompt.id] for prompt in result.prompts]
    plain = [prompt.responses[PLAIN][-1] for prompt in result.prompts]

    def compare(mode: str) -> dict[str, Any]:
        return summarize(chosen, plain, [prompt.responses[mode][-1] for prompt in result.prompts])

    summary = compare(DRAFTER)
    summary["other_modes"] = {mode: compare(mode) for mode in result.modes if mode not in (PLAIN, DRAFTER)}
    return summary


__all__ = [
    "BenchResult",
    "Divergence",
    "PromptResult",
    "RoundRecorder",
    "TurnRun",
    "aggregate",
    "encode_chat",
    "first_divergence",
    "followeval_summary",
    "machine_info",
    "run_bench",
]
