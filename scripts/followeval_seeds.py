"""Pool sampled FollowEval runs (one `coral-hf bench` JSON per seed) into pass rates with 95% intervals.

    for seed in 0 1 2; do
        coral-hf bench --prompts followeval --temperature 0.7 --seed $seed --json fe-$seed.json ...
    done
    python scripts/followeval_seeds.py fe-0.json fe-1.json fe-2.json [--json pooled.json]

Prints a markdown table: per language and overall, the plain pass rate and each assisted mode's, with Wilson
intervals, and the mode-minus-plain difference with Newcombe's interval. Lossless sampling means the differences'
intervals contain 0; their width says how much a run of this size could have detected.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from coral_hf.eval.followeval import pool_sampled_runs


def _rate(entry: dict) -> str:
    low, high = entry["ci"]
    return f"{entry['passes']}/{entry['n']} ({entry['rate']:.1%}, {low:.1%}-{high:.1%})"


def markdown(pooled: dict) -> str:
    """One row per (scope, mode): passes, rate and interval, and the difference to plain."""
    lines = [
        "| scope | mode | passes (rate, 95% CI) | minus plain (95% CI) |",
        "|---|---|---|---|",
    ]
    scopes = [("all", pooled), *pooled["by_language"].items()]
    for scope, part in scopes:
        lines.append(f"| {scope} | plain | {_rate(part['plain'])} | |")
        for mode, entry in part["modes"].items():
            low, high = entry["difference_ci"]
            lines.append(
                f"| {scope} | {mode} | {_rate(entry)} | {entry['difference']:+.1%} ({low:+.1%} to {high:+.1%}) |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="+", type=Path, help="bench JSON files of sampled runs on `followeval`")
    parser.add_argument("--json", type=Path, help="also write the pooled result here")
    args = parser.parse_args()
    summaries, temperatures = [], set()
    for path in args.runs:
        try:
            document = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise SystemExit(f"error: cannot read {path}: {error}") from None
        if "followeval" not in document:
            raise SystemExit(f"error: {path} is not a bench run on `--prompts followeval`")
        summaries.append(document["followeval"])
        temperatures.add(document.get("settings", {}).get("temperature"))
    if not all(temperature and temperature > 0 for temperature in temperatures):
        raise SystemExit("error: pool sampled runs (--temperature > 0); greedy verdicts are the same every seed")
    if len(temperatures) > 1:
        raise SystemExit(f"error: the runs were sampled at different temperatures: {sorted(temperatures)}")
    try:
        pooled = pool_sampled_runs(summaries)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from None
    pooled["temperature"] = temperatures.pop()
    print(f"{pooled['runs']} runs at temperature {pooled['temperature']}\n")
    print(markdown(pooled))
    if args.json:
        args.json.write_text(json.dumps(pooled, indent=2) + "\n")


if __name__ == "__main__":
    main()
