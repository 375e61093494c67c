"""Training a drafter with the stock Trainer: CoralTrainer, the schedule and acceptance callbacks, resume, the CLI.

Everything runs on a tiny Llama target and a tokenizer built in code, on synthetic chats with a learnable pattern
(assistant turns count on through a fixed word cycle), in seconds on CPU.
"""

from __future__ import annotations

import json
import random

import pytest
import torch
from safetensors.torch import load_file
from transformers import PreTrainedTokenizerFast, TrainerCallback

from coral_hf import CoralDrafter, load_drafter
from coral_hf.datastore import DATASTORE_FILE, NgramDatastore
from coral_hf.training import (
    CoralTrainer,
    CoralTrainingArguments,
    UnrollScheduleCallback,
    build_training_dataset,
)
from coral_hf.training.objective import CoralLossConfig

from .testing_utils import make_chat_tokenizer, make_tiny_target

WORDS = "zero one two three four five six seven eight nine ten apple banana cherry red green blue cat dog".split()


def chat_tokenizer() -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (320 tokens) with a ChatML template, trained in code on the synthetic vocabulary."""
    return make_chat_tokenizer([" ".join(WORDS), "continue"], vocab_size=320)


def synthetic_conversations(count: int, seed: int = 0) -> list[list[dict[str, str]]]:
    """User: "continue a b c"; assistant: the next 8-20 words of the cycle."""
    rng = random.Random(seed)
    conversations = []
    for _ in range(count):
        start = rng.randrange(len(WORDS))
        prompt = " ".join(WORDS[(start + i) % len(WORDS)] for i in range(3))
        reply = " ".join(WORDS[(start + 3 + i) % len(WORDS)] for i in range(rng.randrange(8, 20)))
        conversations.append(
            [{"role": "user", "content": f"continue {prompt}"}, {"role": "assistant", "content": reply}]
        )
    return conversations


def tiny_setup(num_train: int = 64, num_heldout: int = 8):
    """(target, tokenizer, train dataset, held-out dataset) for the tiny Llama target."""
    tokenizer = chat_tokenizer()
    target = make_tiny_target("llama", vocab_size=len(tokenizer))
    train = build_training_dataset(tokenizer, synthetic_conversations(num_train, seed=0), max_length=64)
    heldout = build_training_dataset(tokenizer, synthetic_conversations(num_heldout, seed=1), max_length=64)
    return target, tokenizer, train, heldout


def tiny_args(output_dir, **overrides) -> CoralTrainingArguments:
    options = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=8,
        per_device_eval_batch_size=8,
        learning_rate=3e-3,
        logging_steps=5,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        dataloader_pin_memory=False,
        seed=0,
    )
    options.update(overrides)
    return CoralTrainingArguments(**options)


def new_drafter(target, seed: int = 0, **config) -> CoralDrafter:
    torch.manual_seed(seed)
    return CoralDrafter.from_target(target, draft_length=3, **config)


def train_logs(trainer) -> list[dict]:
    return [entry for entry in trainer.state.log_history if "loss" in entry]


@pytest.fixture(scope="module")
def setup():
    return tiny_setup()


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared 2-core machine spinning threads cost 10x."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# ---------------------------------------------------------------------------------------------- training


def test_training_lowers_the_loss_and_raises_tau_sim(setup, tmp_path):
    target, tokenizer, train, heldout = setup
    target_state = {name: tensor.clone() for name, tensor in target.state_dict().items()}
    drafter = new_drafter(target)
    args = tiny_args(
        tmp_path,
        max_steps=40,
        eval_strategy="steps",
        eval_steps=20,
        unroll_steps=2,
        csra_weight=0.1,
        unroll_warmup_ratio=0.2,
        csra_warmup_ratio=0.2,
        dataset_name="synthetic-chats",
        max_length=64,
    )
    trainer = CoralTrainer(
        model=drafter, args=args, train_dataset=train, eval_dataset=heldout, processing_class=tokenizer
    )
    output = trainer.train()

    logs = train_logs(trainer)
    assert len(logs) == 8
    for key in ("acc_step_1", "acc_step_2", "loss_step_1", "feature_loss", "ce_loss", "csra", "unroll_steps"):
        assert key in logs[-1], key
    # The total loss is not comparable along the ramps (more steps, more CSRA weight): compare its parts.
    assert logs[-1]["loss_step_1"] < 0.8 * logs[0]["loss_step_1"]
    assert logs[-1]["feature_loss"] < 0.8 * logs[0]["feature_loss"]
    assert [entry["unroll_steps"] for entry in logs[2:]] == [2] * 6

    acceptance = [entry for entry in trainer.state.log_history if "eval_tau_sim" in entry]
    assert [entry["step"] for entry in acceptance] == [0, 20, 40]  # untrained baseline, then every evaluation
    assert acceptance[-1]["eval_tau_sim"] > acceptance[0]["eval_tau_sim"] + 0.05
    assert acceptance[-1]["eval_acc_step_1"] > acceptance[0]["eval_acc_step_1"]
    assert {"eval_acc_step_1", "eval_acc_step_2", "eval_acc_step_3"} <= set(acceptance[-1])
    metrics = trainer.evaluate()
    assert metrics["eval_tau_sim"] == pytest.approx(acceptance[-1]["eval_tau_sim"])
    assert "eval_loss" in metrics

    # Only the drafter trained: the target is untouched and outside the optimizer.
    for name, tensor in target.state_dict().items():
        assert torch.equal(tensor, target_state[name]), name
    optimized = {id(p) for group in trainer.optimizer.param_groups for p in group["params"]}
    assert optimized == {id(p) for p in drafter.parameters()}
    assert not any(id(p) in optimized for p in target.parameters())

    recipe = drafter.config.training_recipe
    assert recipe["data"] == "synthetic-chats" and recipe["steps"] == 40 and recipe["max_length"] == 64
    assert recipe["objective"]["unroll_steps"] == 2 and recipe["objective"]["csra_weight"] == 0.1
    assert recipe["optimizer"]["betas"] == [0.9, 0.95] and recipe["optimizer"]["max_grad_value"] == 0.5
    assert recipe["heldout_eval"]["tau_sim"] == pytest.approx(acceptance[-1]["eval_tau_sim"], abs=1e-4)
    assert recipe["train_runtime_s"] > 0 and recipe["final_train_loss"] == pytest.approx(output.training_loss, 1e-3)

    trainer.save_model(str(tmp_path / "final"))
    saved = sorted(path.name for path in (tmp_path / "final").iterdir())
    assert saved == ["config.json", "generation_config.json", "model.safetensors", "training_args.bin"]
    assert set(load_file(tmp_path / "final" / "model.safetensors")) == set(drafter.state_dict())
    reloaded = load_drafter(str(tmp_path / "final"), target=target)
    assert reloaded.config.training_recipe["steps"] == 40
    for name, tensor in drafter.state_dict().items():
        assert torch.equal(reloaded.state_dict()[name], tensor), name


def test_gradients_are_clipped_by_value(setup, tmp_path):
    target, tokenizer, train, _ = setup

    class GradientProbe(TrainerCallback):
        largest: list[float] = []

        def on_optimizer_step(self, args, state, control, model=None, **kwargs):
            self.largest.append(max(p.grad.abs().max().item() for p in model.parameters()))

    probe = GradientProbe()
    args = tiny_args(tmp_path, max_steps=2, max_grad_value=1e-4, logging_steps=1)
    trainer = CoralTrainer(
        model=new_drafter(target), args=args, train_dataset=train, processing_class=tokenizer, callbacks=[probe]
    )
    trainer.train()
    assert len(probe.largest) == 2 and max(probe.largest) <= 1e-4
    assert all(entry["grad_norm"] > 1e-2 for entry in train_logs(trainer))  # pre-clipping norms were far larger


def test_trainer_rejects_what_it_cannot_train(setup, tmp_path):
    target, tokenizer, train, _ = setup
    drafter = new_drafter(target).detach()
    with pytest.raises(ValueError, match="not attached"):
        CoralTrainer(model=drafter, args=tiny_args(tmp_path), train_dataset=train, processing_class=tokenizer)
    with pytest.raises(TypeError, match="CoralDrafter"):
        CoralTrainer(model=target, args=tiny_args(tmp_path), train_dataset=train, processing_class=tokenizer)
    with pytest.raises(ValueError, match="csra_pairing"):
        tiny_args(tmp_path, csra_pairing="pairs")
    # `target=` attaches a detached drafter.
    trainer = CoralTrainer(
        model=drafter, args=tiny_args(tmp_path), train_dataset=train, processing_class=tokenizer, target=target
    )
    assert trainer.model.target is target


# ---------------------------------------------------------------------------------------------- schedule


def test_schedule_ramps_depth_then_holds_it():
    final = CoralLossConfig(unroll_steps=3, csra_weight=0.2)
    schedule = UnrollScheduleCallback(final, unroll_warmup_ratio=0.3, csra_warmup_ratio=0.5)
    depths = [schedule.config_at(step, 100).unroll_steps for step in range(100)]
    assert depths[:10] == [1] * 10 and depths[10:20] == [2] * 10 and set(depths[20:]) == {3}
    weights = [schedule.config_at(step, 100).csra_weight for step in (0, 25, 50, 99)]
    assert weights == pytest.approx([0.0, 0.1, 0.2, 0.2])
    assert schedule.config_at(40, 100).ce_weight == final.ce_weight  # the other fields are the final ones
    no_ramp = UnrollScheduleCallback(final)
    assert no_ramp.config_at(0, 100) == final
    with pytest.raises(ValueError, match="unroll_warmup_ratio"):
        UnrollScheduleCallback(final, unroll_warmup_ratio=1.5)


def test_resume_continues_weights_and_schedule(setup, tmp_path):
    target, tokenizer, train, _ = setup
    schedule = dict(unroll_steps=3, unroll_warmup_ratio=1.0, csra_weight=0.1, csra_warmup_ratio=1.0)
    args = tiny_args(tmp_path / "run", max_steps=6, save_strategy="steps", save_steps=3, logging_steps=1, **schedule)
    uninterrupted = CoralTrainer(model=new_drafter(target), args=args, train_dataset=train, processing_class=tokenizer)
    uninterrupted.train()
    expected_weights = {name: tensor.clone() for name, tensor in uninterrupted.model.state_dict().items()}
    expected_logs = train_logs(uninterrupted)
    assert [entry["unroll_steps"] for entry in expected_logs] == [1, 1, 2, 2, 3, 3]

    # A new process would start from a fresh drafter (another init) and the step-3 checkpoint.
    args = tiny_args(tmp_path / "resumed", max_steps=6, logging_steps=1, **schedule)
    resumed = CoralTrainer(
        model=new_drafter(target, seed=1), args=args, train_dataset=train, processing_class=tokenizer
    )
    resumed.train(resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-3"))
    assert resumed.state.global_step == 6
    assert [entry["step"] for entry in train_logs(resumed)] == [1, 2, 3, 4, 5, 6]  # the history carries over
    logs = [entry for entry in train_logs(resumed) if entry["step"] > 3]
    for entry, expected in zip(logs, expected_logs[3:], strict=True):
        assert entry["unroll_steps"] == expected["unroll_steps"]
        assert entry["csra_weight"] == pytest.approx(expected["csra_weight"])
        assert entry["loss"] == pytest.approx(expected["loss"], rel=1e-4)
    for name, tensor in resumed.model.state_dict().items():
        torch.testing.assert_close(tensor, expected_weights[name], rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def saved_tiny_target(tmp_path_factory):
    """A tiny target + tokenizer saved like a Hub model, and a JSONL chat file."""
    directory = tmp_path_factory.mktemp("tiny-target")
    tokenizer = chat_tokenizer()
    make_tiny_target("llama", vocab_size=len(tokenizer)).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    data = directory / "chats.jsonl"
    data.write_text("".join(json.dumps({"messages": chat}) + "\n" for chat in synthetic_conversations(60)))
    return directory, data


def test_cli_trains_saves_and_resumes(saved_tiny_target, tmp_path, capsys):
    from transformers import AutoModelForCausalLM

    from coral_hf.commands.train import main

    target_dir, data = saved_tiny_target
    output_dir = tmp_path / "drafter"
    common = [
        "train",
        "--target",
        str(target_dir),
        "--data",
        str(data),
        "--output-dir",
        str(output_dir),
        "--max-length",
        "64",
        "--batch-size",
        "8",
        "--learning-rate",
        "3e-3",
        "--draft-length",
        "3",
        "--unroll-steps",
        "2",
        "--csra-weight",
        "0.1",
        "--heldout-fraction",
        "0.1",
        "--save-steps",
        "4",
        "--logging-steps",
        "2",
    ]
    assert main([*common, "--max-steps", "4"]) == 0
    printed = capsys.readouterr().out
    assert f"Drafter saved to {output_dir.resolve()} after 4 steps" in printed

    target = AutoModelForCausalLM.from_pretrained(target_dir)
    drafter = load_drafter(str(output_dir), target=target)
    recipe = drafter.config.training_recipe
    assert recipe["steps"] == 4 and recipe["data"] == "chats.jsonl" and recipe["conversations"] == 60
    assert recipe["objective"]["unroll_steps"] == 2 and "tau_sim" in recipe["heldout_eval"]
    assert drafter.config.draft_length == 3
    files = {path.name for path in output_dir.iterdir()}
    assert {"config.json", "model.safetensors", "README.md", "checkpoint-4"} <= files
    assert not files & {"tokenizer.json", "tokenizer_config.json"}  # the drafter ships no tokenizer
    assert "Setting | Value" in (output_dir / "README.md").read_text()

    assert main([*common, "--max-steps", "6", "--resume"]) == 0
    assert "resuming from" in capsys.readouterr().out
    state = json.loads((output_dir / "checkpoint-6" / "trainer_state.json").read_text())
    assert state["global_step"] == 6
    assert [entry["step"] for entry in state["log_history"] if "loss" in entry] == [2, 4, 6]
    assert main([*common, "--resume", str(tmp_path / "missing")]) == 2


def test_cli_is_generated_from_the_training_arguments():
    """Every CoralTrainingArguments field is a flag with the dataclass's default (the CLI's own defaults aside),
    and the short names of earlier releases still parse."""
    import argparse
    import dataclasses

    from coral_hf.commands.train import CLI_DEFAULTS, TrainScriptArguments, parse_arguments, register

    parser = argparse.ArgumentParser(prog="coral-hf")
    register(parser.add_subparsers(dest="command"))
    train_parser = parser._subparsers._group_actions[0].choices["train"]
    text = train_parser.format_help()
    for flag in ("--target", "--data", "--batch-size", "--epochs", "--cpu", "--feature-cache", "--resume"):
        assert flag in text, flag
    for item in dataclasses.fields(CoralTrainingArguments):
        if item.init:
            assert f"--{item.name.replace('_', '-')}" in text, item.name
    script, cli = parse_arguments(parser.parse_args(["train"]))
    assert script == TrainScriptArguments()
    expected = {name: value for name, value in CLI_DEFAULTS.items() if value is not None}
    defaults = CoralTrainingArguments(**expected, eval_steps=500)  # the CLI evaluates where it checkpoints
    for item in dataclasses.fields(CoralTrainingArguments):
        if item.init and item.name not in ("dataset_name", "dataloader_pin_memory"):
            assert getattr(cli, item.name) == getattr(defaults, item.name), item.name
    assert cli.eval_steps == cli.save_steps and cli.max_length == 1024 and cli.logit_vocab == "full"

    argv = [
        "train",
        "--batch-size",
        "3",
        "--epochs",
        "2",
        "--cpu",
        "--feature-cache",
        "cache",
        "--shortlist-size",
        "8",
    ]
    script, cli = parse_arguments(parser.parse_args([*argv, "--resume", "--lr-scheduler-type", "cosine"]))
    assert (cli.per_device_train_batch_size, cli.num_train_epochs, cli.use_cpu) == (3, 2.0, True)
    assert cli.feature_cache_dir == "cache" and cli.logit_vocab == "shortlist" and script.resume == "auto"
    assert cli.lr_scheduler_type == "cosine"  # any TrainingArguments flag


def test_cli_router_stage_trains_only_the_router_and_keeps_the_drafter(saved_tiny_target, tmp_path):
    from transformers import AutoModelForCausalLM

    from coral_hf.commands.train import main

    target_dir, data = saved_tiny_target
    common = [
        "train",
        "--target",
        str(target_dir),
        "--data",
        str(data),
        "--max-length",
        "64",
        "--batch-size",
        "8",
        "--learning-rate",
        "3e-3",
        "--heldout-fraction",
        "0.1",
        "--unroll-steps",
        "2",
        "--max-steps",
        "3",
    ]
    drafter_dir, router_dir = tmp_path / "drafter", tmp_path / "router"
    assert main([*common, "--output-dir", str(drafter_dir)]) == 0
    assert main([*common, "--output-dir", str(router_dir), "--stage", "router"]) == 2  # needs --init-from
    assert (
        main(
            [
                *common,
                "--output-dir",
                str(router_dir),
                "--stage",
                "router",
                "--init-from",
                str(drafter_dir),
                "--num-groups",
                "8",
                "--active-groups",
                "2",
                "--group-strategy",
                "frequency",
            ]
        )
        == 0
    )

    target = AutoModelForCausalLM.from_pretrained(target_dir)
    before = load_drafter(str(drafter_dir), target=target)
    after = load_drafter(str(router_dir), target=target)
    assert after.head_mode == "router" and (after.config.num_groups, after.config.active_groups) == (8, 2)
    for name, parameter in before.named_parameters():  # the drafter itself is frozen in the router stage
        torch.testing.assert_close(after.get_parameter(name), parameter)
    recipe = after.config.training_recipe
    assert recipe["steps"] == 3 and recipe["router_stage"]["stage"] == "router"
    assert recipe["router_stage"]["num_groups"] == 8


def test_cli_continued_training_keeps_the_earlier_recipe(saved_tiny_target, tmp_path):
    from transformers import AutoModelForCausalLM

    from coral_hf.commands.train import main

    target_dir, data = saved_tiny_target
    common = ["train", "--target", str(target_dir), "--data", str(data), "--max-length", "64", "--batch-size", "8"]
    first, second = tmp_path / "stage1", tmp_path / "stage2"
    assert main([*common, "--max-steps", "3", "--output-dir", str(first)]) == 0
    NgramDatastore.build([[5, 6, 7, 8]], max_ngram=3).save(first / DATASTORE_FILE)
    checkpoints = ["--save-steps", "1"]
    assert (
        main([*common, "--max-steps", "2", *checkpoints, "--output-dir", str(second), "--init-from", str(first)]) == 0
    )
    continued = load_drafter(str(second), target=AutoModelForCausalLM.from_pretrained(target_dir))
    recipe = continued.config.training_recipe
    assert recipe["steps"] == 2 and recipe["continued_from"]["steps"] == 3
    # The datastore travels to the final drafter, not into every checkpoint.
    assert continued.datastore.lookup(torch.tensor([5, 6, 7]), 1, 3).tolist() == [8]
    assert (second / "checkpoint-1" / "model.safetensors").exists()
    assert not (second / "checkpoint-1" / DATASTORE_FILE).exists()

    grown = tmp_path / "grown"  # continue with a second decoder layer and the target's first layer fused in
    more = ["--max-steps", "2", "--num-draft-layers", "2", "--fused-feature-layers", "0"]
    assert main([*common, *more, "--output-dir", str(grown), "--init-from", str(second)]) == 0
    drafter = load_drafter(str(grown), target=AutoModelForCausalLM.from_pretrained(target_dir))
    assert len(drafter.layers) == drafter.config.num_draft_layers == 2
    assert drafter.config.fused_feature_layers == [0] and drafter.fused_fc.weight.abs().sum() > 0  # trained
    for wrong in (["--num-draft-layers", "1"], ["--fused-feature-layers", "2"]):  # shrink; the target has 2 layers
        failed = tmp_path / "failed"
        assert main([*common, "--max-steps", "2", "--output-dir", str(failed), "--init-from", str(grown), *wrong]) == 2
        assert not (failed / "model.safetensors").exists()
