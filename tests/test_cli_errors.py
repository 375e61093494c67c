"""`coral-hf` turns expected failures into one `error:` line and exit code 2 (tracebacks with --debug)."""

from __future__ import annotations

import pytest

from coral_hf import CoralDrafter
from coral_hf.cli import main

from .testing_utils import make_chat_tokenizer, make_tiny_target


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """A tiny target with a chat tokenizer, and a drafter for it, saved to disk."""
    root = tmp_path_factory.mktemp("cli")
    tokenizer = make_chat_tokenizer(["hello world", "how are you"], vocab_size=300)
    target = make_tiny_target("llama", vocab_size=len(tokenizer))
    target.save_pretrained(root / "target")
    tokenizer.save_pretrained(root / "target")
    CoralDrafter.from_target(target).save_pretrained(root / "drafter")
    return root


def _error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, lines
    return lines[0]


def test_missing_target_and_drafter_paths(saved, capsys):
    assert main(["bench", "--target", "/nonexistent/target"]) == 2
    assert "target '/nonexistent/target': no such directory, and not a Hub id" in _error_line(capsys)
    assert main(["bench", "--target", str(saved / "target"), "--drafter", "/nonexistent"]) == 2
    assert "drafter '/nonexistent': no such directory, and not a Hub id" in _error_line(capsys)


def test_corrupt_drafter_weights_name_the_file(saved, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("config.json", "generation_config.json"):
        (broken / name).write_bytes((saved / "drafter" / name).read_bytes())
    (broken / "model.safetensors").write_bytes((saved / "drafter" / "model.safetensors").read_bytes()[:100])
    assert main(["bench", "--target", str(saved / "target"), "--drafter", str(broken), "--limit", "1"]) == 2
    line = _error_line(capsys)
    assert "model.safetensors" in line and "corrupt or truncated" in line


def test_debug_shows_the_traceback():
    with pytest.raises(FileNotFoundError, match="no such directory"):
        main(["--debug", "bench", "--target", "/nonexistent/target"])


def test_pull_offline_without_cache_is_one_line(saved, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", True)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    assert main(["pull", "someone/no-such-drafter", "--target", str(saved / "target")]) == 2
    line = _error_line(capsys)
    assert "not in the local cache" in line and "Pull it once while online" in line


def test_unwritable_output_dir_is_one_line(saved, tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    data = tmp_path / "chat.jsonl"
    data.write_text(
        '{"messages": [{"role": "user", "content": "hello"}, {"role": "assistant", "content": "how are you"}]}\n' * 4
    )
    args = ["train", "--target", str(saved / "target"), "--data", str(data), "--max-steps", "1", "--cpu"]
    assert main([*args, "--output-dir", str(blocker / "drafter")]) == 2
    line = _error_line(capsys)
    assert str(blocker) in line


def test_tiny_data_without_a_heldout_conversation_still_trains(saved, tmp_path):
    """A data set too small for the hash split to hold any conversation out keeps one back instead of failing."""
    data = tmp_path / "chat.jsonl"
    data.write_text(
        "".join(
            f'{{"messages": [{{"role": "user", "content": "hello {i}"}}, '
            f'{{"role": "assistant", "content": "how are you {i}"}}]}}\n'
            for i in range(3)
        )
    )
    args = ["train", "--target", str(saved / "target"), "--data", str(data), "--max-steps", "1", "--cpu"]
    assert main([*args, "--max-length", "32", "--output-dir", str(tmp_path / "drafter")]) == 0
    assert (tmp_path / "drafter" / "model.safetensors").is_file()
