"""Presenting a benchmark run: a terminal table, and a Markdown report with PNG plots.

Plots are drawn on a bare `matplotlib.figure.Figure` (Agg canvas): no pyplot, no global backend switch, no display
needed, so the report can be written from any process (CI, a server, a notebook kernel).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from .bench import BASELINE_MODES, DRAFTER, HYBRID, PLAIN, PROMPT_LOOKUP, TREE, TREE_HYBRID, BenchResult, Divergence

SPEEDUP_PLOT = "speedup_per_category.png"
TAU_PLOT = "tau_histogram.png"
_MODE_LABELS = {
    PLAIN: "plain",
    DRAFTER: "drafter",
    PROMPT_LOOKUP: "prompt lookup",
    HYBRID: "hybrid",
    TREE: "tree",
    TREE_HYBRID: "tree + lookup",
}
# Sampled answers are different draws, so verdicts are compared as pass rates over seeds, not instance by instance.
_SAMPLED_FOLLOWEVAL = " (sampled: verdict flips do not apply; pool seeds with scripts/followeval_seeds.py)"
_SHORT_LABELS = {PROMPT_LOOKUP: "PLD", HYBRID: "hybrid", TREE: "tree", TREE_HYBRID: "tree+PLD"}
_MODE_COLORS = {
    DRAFTER: "tab:blue",
    PROMPT_LOOKUP: "tab:orange",
    HYBRID: "tab:green",
    TREE: "tab:red",
    TREE_HYBRID: "tab:purple",
}


def _baselines(result: BenchResult) -> list[str]:
    return [mode for mode in BASELINE_MODES if mode in result.modes]


def _assisted(result: BenchResult) -> list[str]:
    return [DRAFTER, *_baselines(result)]


def _numbers(numbers: dict[str, Any], mode: str) -> dict[str, Any]:
    """The aggregate of `mode`: the drafter's numbers sit at the top level, the baselines' in sub-documents."""
    return numbers if mode == DRAFTER else numbers[mode]


def _rows(summary: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(label, aggregate) per category of a run's `summary()`, then the whole run (only with several categories)."""
    rows = list(summary["categories"].items())
    if len(rows) > 1:
        rows.append(("all", summary))
    return rows


def _columns(result: BenchResult) -> list[str]:
    columns = ["category", "prompts", "plain tok/s", "drafter tok/s", "speedup", "tau"]
    for mode in _baselines(result):
        label = _SHORT_LABELS[mode]
        columns += [f"{label} tok/s", f"{label} speedup", f"{label} tau"]
    if result.settings["lossless_check"]:
        columns.append("identical")
    return columns


def _cells(result: BenchResult, label: str, numbers: dict[str, Any]) -> list[str]:
    tokens_per_s = numbers["tokens_per_s"]
    cells = [
        label,
        str(numbers["prompts"]),
        f"{tokens_per_s[PLAIN]:.1f}",
        f"{tokens_per_s[DRAFTER]:.1f}",
        f"{numbers['speedup_median']:.2f}x",
        f"{numbers['tau']:.2f}",
    ]
    for mode in _baselines(result):
        other = numbers[mode]
        cells += [f"{tokens_per_s[mode]:.1f}", f"{other['speedup_median']:.2f}x", f"{other['tau']:.2f}"]
    if result.settings["lossless_check"]:
        cells.append(" ".join(f"{_numbers(numbers, m)['identical']}/{numbers['compared']}" for m in _assisted(result)))
    return cells


def _decode_columns(result: BenchResult) -> list[str]:
    columns = ["category", "plain first token", "plain decode tok/s", "drafter decode speedup"]
    return columns + [f"{_SHORT_LABELS[mode]} decode speedup" for mode in _baselines(result)]


def _decode_cells(result: BenchResult, label: str, numbers: dict[str, Any]) -> list[str]:
    def value(number: float | None, unit: str = "") -> str:
        return "-" if number is None else f"{number:.2f}{unit}"  # None: no call had tokens after its first forward

    cells = [label, f"{1e3 * numbers['first_token_s'][PLAIN]:.0f} ms", value(numbers["decode_tokens_per_s"][PLAIN])]
    return cells + [value(_numbers(numbers, mode)["decode_speedup_median"], "x") for mode in _assisted(result)]


def _headline(result: BenchResult) -> str:
    settings = result.settings
    parts = [f"{name} {settings[name]}" for name in ("target", "drafter", "prompts") if name in settings]
    parts += [
        f"draft length {result.draft_length}",
        f"max new tokens {settings['max_new_tokens']}",
        "greedy" if settings["lossless_check"] else f"temperature {settings['temperature']}",
        f"{result.machine['torch_threads']} torch threads",
    ]
    return ", ".join(parts)


def _call_gaps(d: Divergence) -> str:
    if d.plain_call_gap is None or d.speculative_call_gap is None:
        return "-"
    return f"{d.plain_call_gap:.4g} / {d.speculative_call_gap:.4g}"


def _shape_gap(d: Divergence) -> str:
    """The target's own evaluation (of those `pair_gaps_by_shape` ran) that ranks the pair closest."""
    if not d.shape_gaps:
        return "-"
    shape = min(d.shape_gaps, key=d.shape_gaps.__getitem__)
    return f"{d.shape_gaps[shape]:.4g} ({shape})"


def _divergence_lines(result: BenchResult, ties: bool) -> list[str]:
    return [
        f"  {d.mode} on {d.prompt_id} turn {d.turn}, token {d.position}: plain {d.plain_piece!r} vs {d.other_piece!r}"
        f" (target top-2 logit gap {d.top2_logit_gap:.4g}; pair gap in the plain / speculative call {_call_gaps(d)};"
        f" closest of the target's own shapes {_shape_gap(d)}) after ...{d.context!r}"
        for d in result.divergences
        if d.tie == ties
    ]


def _text_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(column), *(len(row[i]) for row in rows)) for i, column in enumerate(columns)]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        return "  ".join([first, *(cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True))])

    return [line(columns), "  ".join("-" * width for width in widths), *(line(row) for row in rows)]


def format_table(result: BenchResult, summary: dict[str, Any] | None = None) -> str:
    """The terminal summary: one row per category (median tokens/s and speedup, pooled tau), then totals; then the
    same rows for the decoding phase alone (after the first target forward). `summary`: as for `plot_speedup`."""
    summary = result.summary() if summary is None else summary
    rows = _rows(summary)
    lines = [_headline(result), ""]
    lines += _text_table(_columns(result), [_cells(result, label, numbers) for label, numbers in rows])
    lines.append("")
    lines.append(
        "tok/s, speedup: medians over prompts; tau: generated tokens per target forward; PLD: prompt lookup; hybrid: "
        "drafter + prompt-lookup copies; tree: the drafter's dynamic draft tree (+PLD: with a prompt-lookup branch); "
        "identical: per assisted mode, in column order."
    )
    lines += _interval_note(result, summary)
    lines += _datastore_note(result.settings)
    lines.append("")
    lines += _text_table(_decode_columns(result), [_decode_cells(result, label, numbers) for label, numbers in rows])
    lines.append("")
    lines.append(
        "decode: the same generations after their first target forward (the prefill over the prompt, which every mode "
        "pays alike); first token: median time to it."
    )
    if result.settings.get("drafter_is_random"):
        lines.append("The drafter is UNTRAINED (random weights): tau ~1 and speedup < 1 are expected (a floor).")
    if result.draft_timing is not None:
        timing = ", ".join(f"{name} {value:.3f}" for name, value in result.draft_timing.items())
        lines.append(f"draft step timing (ms): {timing}")
    if result.settings["lossless_check"]:
        true_divergences = [d for d in result.divergences if not d.tie]
        ties = len(result.divergences) - len(true_divergences)
        if ties:
            lines.append(
                f"{ties} greedy output(s) part from plain decoding at a numerical tie ({result.settings['dtype']}: "
                "each call took its own argmax, and the plain call, or the target itself in one of the shapes "
                "speculative decoding computes the position in, ranks the two tokens within 2 units in the last "
                "place or the other way round); not failures:"
            )
            lines += _divergence_lines(result, ties=True)
        if true_divergences:
            lines.append(f"LOSSLESS CHECK: {len(true_divergences)} greedy output(s) truly differ from plain decoding:")
            lines += _divergence_lines(result, ties=False)
        elif not ties:
            lines.append("Lossless check: every greedy output is token-identical to plain decoding.")
    if result.followeval is not None:
        followeval = result.followeval
        sampled = not result.settings["lossless_check"]

        def flips(summary: dict) -> str:
            return "" if sampled else f", flips {summary['verdict_flips']}"

        lines.append(
            f"FollowEval: pass rate plain {followeval['pass_rate_plain']:.1%}, drafter "
            f"{followeval['pass_rate_drafter']:.1%}{flips(followeval)}"
            + "".join(
                f"; {_MODE_LABELS[mode]} {other['pass_rate_drafter']:.1%}{flips(other)}"
                for mode, other in followeval.get("other_modes", {}).items()
            )
            + (_SAMPLED_FOLLOWEVAL if sampled else "")
        )
    return "\n".join(lines)


def _markdown_table(columns: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    align = ["---"] + ["---:"] * (len(columns) - 1)
    return [f"| {' | '.join(cells)} |" for cells in (columns, align, *rows)]


def plot_speedup(result: BenchResult, path: Path, summary: dict[str, Any] | None = None) -> None:
    """Bar chart of the median speedup per category (every assisted mode), with the break-even line at 1.
    `summary`: the run's `result.summary()` when the caller has it (computing one resamples every interval)."""
    categories = (result.summary() if summary is None else summary)["categories"]
    names = list(categories)
    modes = _assisted(result)
    figure = Figure(figsize=(max(5.0, 1.1 * len(names) + 2.5), 3.8), layout="constrained")
    axes = figure.add_subplot()
    width = 0.8 / len(modes)
    for offset, mode in enumerate(modes):
        values = [_numbers(categories[name], mode)["speedup_median"] for name in names]
        positions = [index + (offset - (len(modes) - 1) / 2) * width for index in range(len(names))]
        bars = axes.bar(positions, values, width=width, label=_MODE_LABELS[mode], color=_MODE_COLORS[mode])
        axes.bar_label(bars, fmt="%.2fx", fontsize=8)
    axes.axhline(1.0, color="black", linewidth=0.8, linestyle="--")
    axes.set_xticks(range(len(names)), names, rotation=20 if len(names) > 4 else 0)
    axes.set_ylabel("speedup over plain generate (median)")
    axes.set_title("Speedup per category")
    axes.legend()
    figure.savefig(path, dpi=120)


def plot_tau_histogram(result: BenchResult, path: Path, summary: dict[str, Any] | None = None) -> None:
    """Share of target forwards by tokens gained per forward (accepted draft tokens + the target's own token).
    `summary`: as for `plot_speedup`."""
    summary = result.summary() if summary is None else summary
    histograms = {mode: _numbers(summary, mode)["tau_histogram"] for mode in _assisted(result)}
    largest = max(max(histogram, default=1) for histogram in histograms.values())
    figure = Figure(figsize=(6.0, 3.8), layout="constrained")
    axes = figure.add_subplot()
    width = 0.8 / len(histograms)
    for offset, (mode, histogram) in enumerate(histograms.items()):
        total = sum(histogram.values()) or 1
        sizes = list(range(1, largest + 1))
        shares = [histogram.get(size, 0) / total for size in sizes]
        tau = _numbers(summary, mode)["tau"]
        positions = [size + (offset - (len(histograms) - 1) / 2) * width for size in sizes]
        label = f"{_MODE_LABELS[mode]} (tau {tau:.2f})"
        axes.bar(positions, shares, width=width, label=label, color=_MODE_COLORS[mode])
    axes.set_xticks(range(1, largest + 1))
    axes.set_xlabel("tokens gained per target forward")
    axes.set_ylabel("share of target forwards")
    axes.set_title(f"Acceptance per round (draft length {result.draft_length})")
    axes.legend()
    figure.savefig(path, dpi=120)


def _json_block(data: dict[str, Any]) -> list[str]:
    return [f"- **{key}**: `{value}`" for key, value in data.items()]


def _interval_note(result: BenchResult, summary: dict[str, Any]) -> list[str]:
    """One line with the whole run's 95% bootstrap interval of each mode's median speedup (3 prompts or more)."""
    parts = []
    for mode in _assisted(result):
        interval = _numbers(summary, mode).get("speedup_interval")
        if interval is not None:
            parts.append(f"{_SHORT_LABELS.get(mode, mode)} {interval[0]:.2f}-{interval[1]:.2f}x")
    if not parts:
        return []
    return [
        f"median speedup over all {summary['prompts']} prompts, 95% bootstrap interval (other prompts of the same "
        f"kind): {', '.join(parts)}."
    ]


def _datastore_note(settings: dict) -> list[str]:
    """One line saying what the datastore proposals of the modes with copies read, when the drafter had one."""
    datastore = settings.get("datastore")
    if not datastore:
        return []
    return [
        f"hybrid and tree + lookup also proposed continuations from the drafter's datastore ({datastore['tokens']:,} "
        f"tokens of {datastore['source'] or 'unnamed data'}; up to {datastore['datastore_tokens']} tokens, suffixes "
        f"of >= {datastore['datastore_min_ngram']})."
    ]


def render_markdown(result: BenchResult, summary: dict[str, Any] | None = None) -> str:
    """The Markdown report (expects the PNGs `SPEEDUP_PLOT` and `TAU_PLOT` next to it). `summary`: as for
    `plot_speedup`."""
    settings = result.settings
    summary = result.summary() if summary is None else summary
    lines = ["# coral-hf bench report", "", _headline(result) + ".", ""]
    if settings.get("drafter_is_random"):
        lines += [
            "> **Untrained drafter.** This run uses a randomly initialised drafter (`--drafter random`), a floor for",
            "> the overhead of drafting: it accepts almost nothing, so tau is about 1 and the speedup is below 1.",
            "",
        ]
    lines += ["## Summary", ""]
    rows = _rows(summary)
    lines += _markdown_table(_columns(result), [_cells(result, label, numbers) for label, numbers in rows])
    lines += [
        "",
        "tokens/s and speedups are medians over prompts of per-prompt values (all turns of a prompt pooled); tau is",
        "generated tokens per target forward, pooled over the group, counting the target's own token of each round.",
        "All modes ran in the same process, interleaved per turn in rotating order, after warm-up.",
        *_interval_note(result, summary),
        *_datastore_note(settings),
        "",
        "Decoding phase alone: each `generate` call after its first target forward (the prefill over the prompt,",
        "which speculation cannot shorten and every mode pays alike):",
        "",
        *_markdown_table(_decode_columns(result), [_decode_cells(result, label, numbers) for label, numbers in rows]),
        "",
        f"![speedup per category]({SPEEDUP_PLOT})",
        "",
        f"![tokens per target forward]({TAU_PLOT})",
        "",
    ]
    if result.draft_timing is not None:
        lines += ["## Draft step latency", ""]
        lines += [f"- **{name}**: {value:.3f} ms" for name, value in result.draft_timing.items()]
        lines.append("")
    lines += ["## Lossless check", ""]
    if not settings["lossless_check"]:
        lines += [f"Sampling run (temperature {settings['temperature']}): outputs are not compared.", ""]
    else:
        lines.append(f"Drafter: {summary['identical']}/{summary['compared']} greedy outputs token-identical to plain.")
        for mode in _baselines(result):
            other = summary[mode]
            lines.append(f"{_MODE_LABELS[mode].capitalize()}: {other['identical']}/{other['compared']} identical.")
        lines.append("")
        if result.divergences:
            columns = [
                "mode",
                "prompt",
                "turn",
                "token",
                "plain",
                "other",
                "top-2 logit gap",
                "pair gap, plain / speculative call",
                "closest shape",
                "tie",
                "context",
            ]
            rows = [
                [
                    d.mode,
                    d.prompt_id,
                    str(d.turn),
                    str(d.position),
                    f"`{d.plain_piece!r}`",
                    f"`{d.other_piece!r}`",
                    f"{d.top2_logit_gap:.4g}",
                    _call_gaps(d),
                    _shape_gap(d),
                    "yes" if d.tie else "**no**",
                    f"`{d.context!r}`",
                ]
                for d in result.divergences
            ]
            lines += _markdown_table(columns, rows)
            lines.append("")
    if result.followeval is not None:
        followeval = result.followeval
        lines += [
            "## FollowEval",
            "",
            f"Pass rate plain {followeval['pass_rate_plain']:.1%}, drafter {followeval['pass_rate_drafter']:.1%}"
            + (
                f", verdict flips {followeval['verdict_flips']} (of {followeval['n']})."
                if settings["lossless_check"]
                else f" (of {followeval['n']}){_SAMPLED_FOLLOWEVAL}."
            ),
            "",
        ]
        others = followeval.get("other_modes", {})
        columns = ["group", "n", "plain", "drafter"] + [_MODE_LABELS[mode] for mode in others]
        rows = []
        for key in ("by_language", "by_dimension"):
            for group, rates in followeval[key].items():
                row = [group, str(rates["n"]), f"{rates['plain']:.1%}", f"{rates['drafter']:.1%}"]
                row += [f"{other[key][group]['drafter']:.1%}" for other in others.values()]
                rows.append(row)
        row = ["flips", str(followeval["n"]), "", str(followeval["verdict_flips"])]
        rows.append(row + [str(other["verdict_flips"]) for other in others.values()])
        lines += _markdown_table(columns, rows)
        lines.append("")
    lines += ["## Per prompt", ""]
    assisted = _assisted(result)
    columns = ["prompt", "category", "turns", "tokens (plain)", "plain tok/s"]
    columns += [
        f"{_MODE_LABELS[mode]} {name}" for mode in assisted for name in ("tok/s", "speedup", "decode speedup", "tau")
    ]
    rows = []
    for prompt in result.prompts:
        row = [prompt.id, prompt.category, str(len(prompt.runs[PLAIN])), str(prompt.tokens(PLAIN))]
        row.append(f"{prompt.tokens_per_s(PLAIN):.1f}")
        for mode in assisted:
            row += [
                f"{prompt.tokens_per_s(mode):.1f}",
                f"{prompt.speedup(mode):.2f}x",
                "-" if math.isnan(prompt.decode_speedup(mode)) else f"{prompt.decode_speedup(mode):.2f}x",
                f"{prompt.tau(mode):.2f}",
            ]
        rows.append(row)
    lines += _markdown_table(columns, rows)
    lines += ["", "## Settings", "", *_json_block(settings), "", "## Machine", "", *_json_block(result.machine), ""]
    return "\n".join(lines)


def write_report(result: BenchResult, directory: str | Path, summary: dict[str, Any] | None = None) -> Path:
    """Write `report.md` and its plots into `directory` (created if needed); returns the path of `report.md`.
    `summary`: as for `plot_speedup`."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    summary = result.summary() if summary is None else summary
    plot_speedup(result, directory / SPEEDUP_PLOT, summary)
    plot_tau_histogram(result, directory / TAU_PLOT, summary)
    path = directory / "report.md"
    path.write_text(render_markdown(result, summary), encoding="utf-8")
    return path


__all__ = ["format_table", "plot_speedup", "plot_tau_histogram", "render_markdown", "write_report"]
