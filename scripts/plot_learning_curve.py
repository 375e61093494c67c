"""Plot a training run's learning curve: held-out acc@1..k and tau_sim against training tokens.

    python scripts/plot_learning_curve.py /work/runs/long --out docs/bench/learning-curve.png [--json curve.json]

Reads `trainer_state.json` of the run directory (or of its latest checkpoint) and writes a PNG, and optionally the
curve as JSON (step, tokens, acc@depth, tau_sim per evaluation), so the curve can be committed and compared.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from matplotlib.figure import Figure
from transformers.trainer_utils import get_last_checkpoint


def load_curve(run_dir: Path) -> list[dict]:
    """One entry per held-out evaluation: step, tokens seen, per-depth accuracy and tau_sim."""
    state = run_dir / "trainer_state.json"
    if not state.is_file():
        last = get_last_checkpoint(str(run_dir))
        if last is None:
            raise SystemExit(f"error: no trainer_state.json in {run_dir} or its checkpoints")
        state = Path(last) / "trainer_state.json"
    history = json.loads(state.read_text())["log_history"]
    curve = []
    for entry in history:
        if "eval_tau_sim" not in entry:
            continue
        depths = sorted(int(key.rsplit("_", 1)[1]) for key in entry if key.startswith("eval_acc_step_"))
        curve.append(
            {
                "step": entry["step"],
                "tokens": entry.get("num_input_tokens_seen", 0),
                "acc": [round(entry[f"eval_acc_step_{depth}"], 4) for depth in depths],
                "tau_sim": round(entry["eval_tau_sim"], 4),
            }
        )
    return curve


def plot(curve: list[dict], path: Path, title: str) -> None:
    figure = Figure(figsize=(9.0, 3.8), layout="constrained")
    accuracy, tau = figure.subplots(1, 2)
    tokens = [point["tokens"] / 1e6 for point in curve]
    for depth in range(len(curve[-1]["acc"])):
        accuracy.plot(tokens, [point["acc"][depth] for point in curve], marker="o", label=f"acc@{depth + 1}")
    accuracy.set_xlabel("training tokens (M)")
    accuracy.set_ylabel("held-out accuracy (drafter top-1 = target top-1)")
    accuracy.legend()
    accuracy.grid(alpha=0.3)
    tau.plot(tokens, [point["tau_sim"] for point in curve], marker="o", color="black")
    tau.set_xlabel("training tokens (M)")
    tau.set_ylabel(f"tau_sim (chain, depth {len(curve[-1]['acc'])})")
    tau.grid(alpha=0.3)
    figure.suptitle(title)
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="PNG to write.")
    parser.add_argument("--json", type=Path, help="Also write the curve as JSON.")
    parser.add_argument("--title", default="Held-out learning curve")
    args = parser.parse_args()
    curve = load_curve(args.run_dir)
    if not curve:
        raise SystemExit(f"error: {args.run_dir} has no held-out evaluation yet")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot(curve, args.out, args.title)
    if args.json is not None:
        args.json.write_text(json.dumps(curve, indent=1) + "\n")
    for point in curve:
        print(point)


if __name__ == "__main__":
    main()
