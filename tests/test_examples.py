"""The scripts in examples/ run as written: on a tiny target saved to disk, a local Hub, and the real train CLI."""

from __future__ import annotations

import argparse
import json
import re
import runpy
import shlex
import sys
from pathlib import Path

import pytest

from coral_hf.commands import train as train_command

from .hub_server import HubServer, hub_environment
from .test_training import chat_tokenizer, synthetic_conversations
from .testing_utils import make_tiny_target

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _run_example(name: str, argv: list[str], monkeypatch) -> int:
    monkeypatch.setattr(sys, "argv", [name, *argv])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(EXAMPLES / name), run_name="__main__")
    return exit_info.value.code


@pytest.fixture(scope="module")
def tiny_files(tmp_path_factory):
    """A tiny Llama target with its ChatML tokenizer, and a chat JSONL file it can be trained on."""
    root = tmp_path_factory.mktemp("examples")
    tokenizer = chat_tokenizer()
    target = make_tiny_target("llama", vocab_size=len(tokenizer))
    target.save_pretrained(root / "target")
    tokenizer.save_pretrained(root / "target")
    data = root / "chats.jsonl"
    data.write_text("".join(json.dumps({"messages": chat}) + "\n" for chat in synthetic_conversations(48)))
    return root


def test_train_then_generate_then_push_pull(tiny_files, tmp_path, monkeypatch, capsys):
    target = str(tiny_files / "target")
    drafter = str(tmp_path / "drafter")
    train = ["--target", target, "--data", str(tiny_files / "chats.jsonl"), "--output-dir", drafter]
    train += ["--max-steps", "8", "--max-length", "64", "--cpu"]
    assert _run_example("train_drafter.py", train, monkeypatch) == 0
    assert "held-out tau_sim" in capsys.readouterr().out

    generate = ["--target", target, "--drafter", drafter, "--prompt", "continue one two", "--max-new-tokens", "12"]
    assert _run_example("generate_with_drafter.py", generate, monkeypatch) == 0
    assert _run_example("generate_with_drafter.py", [*generate, "--hybrid", "3"], monkeypatch) == 0
    assert _run_example("generate_with_drafter.py", [*generate, "--tree"], monkeypatch) == 0
    assert "identical to plain generate: True" in capsys.readouterr().out

    with HubServer() as server, hub_environment(server, tmp_path / "hf_home"):
        repo_id = f"{server.username}/tiny-drafter"
        push = ["--target", target, "--drafter", drafter, "--repo-id", repo_id]
        assert _run_example("push_pull.py", push, monkeypatch) == 0
    assert f"pulled {repo_id}" in capsys.readouterr().out


@pytest.mark.parametrize("recipe", sorted(path.name for path in EXAMPLES.glob("*.sh")))
def test_shell_recipes_use_real_train_flags(recipe):
    """Every `coral-hf train` line of a recipe parses with the real CLI parser (no renamed or missing flag)."""
    text = (EXAMPLES / recipe).read_text().replace("\\\n", " ")
    commands = [line.split("coral-hf train", 1)[1] for line in text.splitlines() if "coral-hf train" in line]
    assert commands, f"{recipe} runs no `coral-hf train`"
    parser = argparse.ArgumentParser(prog="coral-hf")
    train_command.register(parser.add_subparsers(dest="command", required=True))
    for command in commands:
        # Shell variables: their defaults where the recipe gives one, else "1" (valid for path and number flags).
        command = re.sub(r"\$\{\w+:-([^}]*)\}", r"\1", command)
        words = shlex.split(re.sub(r"\$\{?\w+\}?", "1", command))
        _, leftover = parser.parse_known_args(["train", *words])
        assert not [word for word in leftover if word.startswith("--")], f"{recipe}: unknown flags {leftover}"
