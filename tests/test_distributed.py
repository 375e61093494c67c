"""Distributed data-parallel training: two CPU processes (gloo) launched with torchrun, as accelerate runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

from coral_hf import load_drafter

from .test_training import tiny_setup

TESTS_DIR = Path(__file__).parent

WORKER = """
import json, sys
from pathlib import Path

sys.path.insert(0, {root_dir!r})
import torch
from tests.test_training import new_drafter, tiny_args, tiny_setup

from coral_hf.training import CoralTrainer


class RecordingTrainer(CoralTrainer):
    seen = []

    def compute_loss(self, model, inputs, *args, **kwargs):
        if model.training:
            self.seen.append(inputs["input_ids"].tolist())
        return super().compute_loss(model, inputs, *args, **kwargs)


output = Path(sys.argv[1])
target, tokenizer, train, heldout = tiny_setup(num_train=32, num_heldout=4)
args = tiny_args(
    output, max_steps=4, use_cpu=True, ddp_backend="gloo", per_device_train_batch_size=4, logging_steps=2,
    feature_cache_dir=str(output / "features"), max_length=64, eval_strategy="steps", eval_steps=4,
    acceptance_eval_on_start=False,
)
trainer = RecordingTrainer(model=new_drafter(target), args=args, train_dataset=train, eval_dataset=heldout,
                           processing_class=tokenizer)
trainer.train()
trainer.save_model(str(output / "drafter"))
report = {{
    "rank": args.process_index,
    "world_size": args.world_size,
    "wrapper": type(trainer.model_wrapped).__name__,
    "seen": trainer.seen,
    "weights": {{name: tensor.double().sum().item() for name, tensor in trainer.model.state_dict().items()}},
    "tau_sim": [entry["eval_tau_sim"] for entry in trainer.state.log_history if "eval_tau_sim" in entry],
}}
(output / f"rank{{args.process_index}}.json").write_text(json.dumps(report))
"""


def test_two_process_training_syncs_gradients_and_saves_a_loadable_drafter(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(root_dir=str(TESTS_DIR.parent)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", "TOKENIZERS_PARALLELISM": "false"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(script),
        str(tmp_path / "out"),
    ]
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert result.returncode == 0, result.stderr[-4000:]

    reports = [json.loads((tmp_path / "out" / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert [report["world_size"] for report in reports] == [2, 2]
    assert {report["wrapper"] for report in reports} == {"DistributedDataParallel"}
    # Each process trained on its own share of the data...
    assert len(reports[0]["seen"]) == len(reports[1]["seen"]) == 4
    assert reports[0]["seen"] != reports[1]["seen"]
    # ...and DDP averaged the gradients: both hold the same weights.
    for name, value in reports[0]["weights"].items():
        assert abs(value - reports[1]["weights"][name]) <= 1e-6 * max(1.0, abs(value)), name
    assert reports[0]["tau_sim"] == reports[1]["tau_sim"] and len(reports[0]["tau_sim"]) == 1

    # The features were cached once, split between the processes, and the saved drafter loads on its target.
    assert sorted(path.name for path in (tmp_path / "out" / "features").iterdir()) == ["eval", "train"]
    target = tiny_setup(num_train=1, num_heldout=1)[0]
    drafter = load_drafter(str(tmp_path / "out" / "drafter"), target=target)
    assert drafter.config.training_recipe["processes"] == 2
    assert drafter.config.training_recipe["batch_size"] == 8
    for name, tensor in drafter.state_dict().items():
        value = tensor.double().sum().item()
        assert abs(value - reports[0]["weights"][name]) <= 1e-6 * max(1.0, abs(value)), name
    assert torch.isfinite(torch.cat([p.flatten() for p in drafter.parameters()])).all()
