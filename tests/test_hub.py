"""Hub integration: push / pull drafters with model cards, against a local Hub-compatible server.

The server (`tests/hub_server.py`) speaks the Hub HTTP API to the real `huggingface_hub` client, so these tests
run the same code paths as against huggingface.co: in this process (constants patched by `hub_environment`) and in
fresh processes that only get `HF_ENDPOINT` / `HF_HOME` / `HF_HUB_OFFLINE` environment variables.
"""

from __future__ import annotations

import base64
import json
import logging
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from huggingface_hub import HfApi, hf_hub_download, snapshot_download, upload_folder
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, PreTrainedModel

import coral_hf
from coral_hf import CoralDrafter, CoralTargetMismatchError
from coral_hf.hub import UnsafeCheckpointError, pull_drafter, push_drafter, render_model_card
from coral_hf.training import DrafterCardCallback, DrafterCardTrainerMixin

from .hub_server import HubServer, hub_environment, subprocess_env
from .testing_utils import make_tiny_target

# huggingface_hub's LFS upload passes a file object as `data=`, which its HTTP client deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Use 'content=<...>' to upload raw bytes:DeprecationWarning")

REPO_ROOT = Path(__file__).resolve().parents[1]
RECIPE = {
    "dataset": "anon8231489123/ShareGPT_Vicuna_unfiltered",
    "steps": 2000,
    "unroll_steps": 3,
    "loss": {"csra_weight": 0.1, "csra_temperature": 0.1},
    "lr": 3e-5,
}
EVAL = {
    "tau": 3.1,
    "speedup": 1.8,
    "decode_speedup": 2.1,
    "draft_length": 5,
    "prompts": "sharegpt-heldout",
    "device": "cpu",
}


# ---------------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def hub_server() -> Iterator[HubServer]:
    """One local Hub for this module (LFS enabled for weights, like huggingface.co)."""
    with HubServer() as server:
        yield server


@pytest.fixture
def hub(hub_server: HubServer, tmp_path: Path) -> Iterator[HubServer]:
    """The local Hub, with this process's `huggingface_hub` / `transformers` pointed at it and a fresh HF_HOME."""
    with hub_environment(hub_server, tmp_path / "hf_home"):
        yield hub_server
    hub_server.clear_failures()  # an injected failure a test did not trigger must not leak into the next test


@pytest.fixture(scope="module")
def target_dir(tmp_path_factory) -> Path:
    """A tiny Llama target saved to disk, so fresh processes load exactly the same weights."""
    path = tmp_path_factory.mktemp("target")
    make_tiny_target("llama").save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def target(target_dir: Path) -> PreTrainedModel:
    return AutoModelForCausalLM.from_pretrained(target_dir, dtype=torch.float32).eval()


@pytest.fixture(scope="module")
def drafter(target: PreTrainedModel) -> CoralDrafter:
    torch.manual_seed(0)
    model = CoralDrafter.from_target(target)
    model.config.training_recipe = dict(RECIPE)
    model.config.eval_results = dict(EVAL)
    return model


def _run(code: str, env: dict[str, str], timeout: int = 180) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, f"subprocess failed:\nSTDOUT:\n{result.stdout}\nSTDERR:\n{result.stderr}"
    return result


def _cli_command() -> list[str]:
    """`python -m coral_hf.cli` once the lead has wired the hub commands in, their own entry point until then."""
    from coral_hf import cli

    if "coral_hf.commands.hub" in cli.COMMAND_MODULES:
        return [sys.executable, "-m", "coral_hf.cli"]
    return [sys.executable, "-m", "coral_hf.commands.hub"]


def _cli_in_process(args: list[str]) -> int:
    """The same command line, parsed and run in this process (no interpreter start-up: keeps the suite fast)."""
    from coral_hf import cli
    from coral_hf.commands import hub as hub_commands

    return (cli.main if "coral_hf.commands.hub" in cli.COMMAND_MODULES else hub_commands.main)(args)


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*_cli_command(), *args], env=env, cwd=REPO_ROOT, capture_output=True, text=True, timeout=180
    )


def _assert_same_weights(dir_a: Path, dir_b: Path) -> None:
    a, b = load_file(dir_a / "model.safetensors"), load_file(dir_b / "model.safetensors")
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


def _assert_same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    state_a, state_b = a.state_dict(), b.state_dict()
    assert state_a.keys() == state_b.keys()
    assert all(torch.equal(state_a[name], state_b[name]) for name in state_a)


def _requests_since(server: HubServer, start: int) -> list:
    return server.requests[start:]


# ---------------------------------------------------------------------------------------------------- the server
def test_server_round_trip_in_process(hub: HubServer, tmp_path: Path):
    api = HfApi()
    assert api.whoami()["name"] == hub.username
    repo_id = api.create_repo("server-round-trip").repo_id
    assert repo_id == f"{hub.username}/server-round-trip"
    assert api.create_repo(repo_id, exist_ok=True).repo_id == repo_id
    with pytest.raises(HfHubHTTPError) as conflict:
        api.create_repo(repo_id)
    assert conflict.value.response.status_code == 409

    folder = tmp_path / "folder"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("first")
    (folder / "sub" / "b.json").write_text("{}")
    (folder / "weights.safetensors").write_bytes(b"\x00\x01" * 600)  # stored as LFS, like on the Hub
    first = upload_folder(repo_id=repo_id, folder_path=folder, commit_message="first")
    (folder / "a.txt").write_text("second")
    second = upload_folder(repo_id=repo_id, folder_path=folder, commit_message="second")
    assert first.oid != second.oid and len(second.oid) == 40

    assert Path(hf_hub_download(repo_id, "a.txt")).read_text() == "second"
    assert Path(hf_hub_download(repo_id, "a.txt", revision=first.oid)).read_text() == "first"  # history kept
    snapshot = Path(snapshot_download(repo_id))
    assert snapshot.name == second.oid
    assert (snapshot / "weights.safetensors").read_bytes() == b"\x00\x01" * 600
    assert (snapshot / "sub" / "b.json").read_text() == "{}"

    info = api.model_info(repo_id)
    assert info.sha == second.oid
    siblings = {sibling.rfilename: sibling for sibling in info.siblings}
    assert set(siblings) == {".gitattributes", "a.txt", "sub/b.json", "weights.safetensors"}
    assert siblings["weights.safetensors"].lfs is not None and siblings["a.txt"].lfs is None
    assert api.model_info(repo_id, revision=first.oid).sha == first.oid
    tree = {entry.path for entry in api.list_repo_tree(repo_id, recursive=True)}
    assert {"sub", "sub/b.json", "a.txt"} <= tree
    assert [entry.path for entry in api.list_repo_tree(repo_id, path_in_repo="sub")] == ["sub/b.json"]
    assert [commit.title for commit in api.list_repo_commits(repo_id)] == ["second", "first", "initial commit"]

    api.create_branch(repo_id, branch="dev", revision=first.oid)
    api.create_tag(repo_id, tag="v1", revision=first.oid)
    refs = api.list_repo_refs(repo_id)
    assert {ref.name: ref.target_commit for ref in refs.branches} == {"main": second.oid, "dev": first.oid}
    assert Path(hf_hub_download(repo_id, "a.txt", revision="v1")).read_text() == "first"

    private = api.create_repo("server-private", private=True).repo_id
    upload_folder(repo_id=private, folder_path=folder)
    assert HfApi().model_info(private).private is True
    with pytest.raises(RepositoryNotFoundError):
        HfApi(token=False).model_info(private)  # invisible without the owner's token, like on the Hub


def test_server_errors_map_to_client_exceptions(hub: HubServer, tmp_path: Path):
    api = HfApi()
    repo_id = api.create_repo("server-errors").repo_id
    (tmp_path / "x.txt").write_text("x")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(f"{hub.username}/does-not-exist", "x.txt")
    with pytest.raises(RepositoryNotFoundError):
        api.model_info(f"{hub.username}/does-not-exist")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(repo_id, ".gitattributes", revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        api.model_info(repo_id, revision="no-such-branch")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(repo_id, "missing.txt")
    # Writes need a valid token in the Authorization header.
    for anonymous in (HfApi(token=False), HfApi(token="hf_wrong_token")):
        with pytest.raises(HfHubHTTPError) as denied:
            anonymous.upload_file(path_or_fileobj=tmp_path / "x.txt", path_in_repo="x.txt", repo_id=repo_id)
        assert denied.value.response.status_code == 401
    assert api.list_repo_files(repo_id) == [".gitattributes"]
    assert all(record.user in (None, hub.username) for record in hub.requests)


def _raw_commit(server: HubServer, repo_id: str, lines: list[dict], *, declared_extra: int = 0) -> int | None:
    """POST an ndjson commit over a raw socket; `declared_extra` > 0 announces more bytes than sent, then hangs up."""
    body = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    host, port = server.url.removeprefix("http://").split(":")
    request = (
        f"POST /api/models/{repo_id}/commit/main HTTP/1.1\r\nHost: {host}\r\n"
        f"Authorization: Bearer {server.token}\r\nContent-Type: application/x-ndjson\r\n"
        f"Content-Length: {len(body) + declared_extra}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request + body)
        if declared_extra:
            sock.shutdown(socket.SHUT_WR)  # interrupted upload: the rest of the body never comes
        response = sock.recv(65536)
    return int(response.split(b" ")[1]) if response else None


def test_server_commits_are_atomic(hub: HubServer):
    repo_id = HfApi().create_repo("server-atomic").repo_id
    head = hub.branch_head(repo_id)
    header = {"key": "header", "value": {"summary": "partial"}}
    good_file = {
        "key": "file",
        "value": {"path": "good.txt", "content": base64.b64encode(b"ok").decode(), "encoding": "base64"},
    }
    missing_lfs = {"key": "lfsFile", "value": {"path": "w.safetensors", "algo": "sha256", "oid": "ab" * 32}}
    # An operation that fails validation after a valid one: nothing of the commit lands.
    assert _raw_commit(hub, repo_id, [header, good_file, missing_lfs]) == 422
    assert hub.branch_head(repo_id) == head
    # A body cut off mid-way (client went away): nothing lands either.
    assert _raw_commit(hub, repo_id, [header, good_file], declared_extra=500) is None
    assert hub.branch_head(repo_id) == head
    assert HfApi().list_repo_files(repo_id) == [".gitattributes"]
    # The same valid operations as a complete commit do land.
    assert _raw_commit(hub, repo_id, [header, good_file]) == 200
    assert hub.read_file(repo_id, "good.txt") == b"ok"


def test_server_honours_hf_endpoint_in_fresh_processes_and_offline_cache(hub_server: HubServer, tmp_path: Path):
    with hub_environment(hub_server, tmp_path / "setup"):
        repo_id = HfApi().create_repo("server-subprocess").repo_id
        (tmp_path / "f").mkdir()
        (tmp_path / "f" / "data.txt").write_text("v1")
        first = upload_folder(repo_id=repo_id, folder_path=tmp_path / "f").oid
        (tmp_path / "f" / "data.txt").write_text("v2")
        upload_folder(repo_id=repo_id, folder_path=tmp_path / "f")
    hf_home = tmp_path / "hf_home"
    code = f"""
        import os
        from pathlib import Path
        import huggingface_hub
        from huggingface_hub import HfApi, hf_hub_download, snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
        assert huggingface_hub.constants.ENDPOINT == {hub_server.url!r}
        snapshot = Path(snapshot_download({repo_id!r}))
        assert (snapshot / "data.txt").read_text() == "v2"
        assert Path(hf_hub_download({repo_id!r}, "data.txt", revision={first!r})).read_text() == "v1"
        assert snapshot.is_relative_to(os.environ["HF_HOME"])
        print(HfApi().model_info({repo_id!r}).sha)
    """
    online = _run(code, subprocess_env(hub_server, hf_home))
    assert online.stdout.strip() == hub_server.branch_head(repo_id)
    offline_code = f"""
        from pathlib import Path
        from huggingface_hub import hf_hub_download, snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
        assert (Path(snapshot_download({repo_id!r})) / "data.txt").read_text() == "v2"
        assert Path(hf_hub_download({repo_id!r}, "data.txt", revision={first!r})).read_text() == "v1"
        try:
            snapshot_download("{hub_server.username}/never-downloaded")
        except LocalEntryNotFoundError:
            print("not cached")
    """
    start = len(hub_server.requests)
    offline = _run(offline_code, subprocess_env(hub_server, hf_home, offline=True))
    assert offline.stdout.strip() == "not cached"
    assert _requests_since(hub_server, start) == []  # served from the cache, the server was never contacted


def test_server_regular_uploads_with_xet_enabled(tmp_path: Path):
    """With `lfs=False` every file is committed inline: the client's default (xet-enabled) setup works unchanged."""
    with HubServer(lfs=False) as server, hub_environment(server, tmp_path / "hf_home"):
        import huggingface_hub.constants as constants

        assert constants.HF_HUB_DISABLE_XET is False
        repo_id = HfApi().create_repo("regular").repo_id
        (tmp_path / "w.safetensors").write_bytes(b"\x00" * 100)
        upload_folder(repo_id=repo_id, folder_path=tmp_path, allow_patterns=["*.safetensors"])
        assert Path(hf_hub_download(repo_id, "w.safetensors")).read_bytes() == b"\x00" * 100


# ---------------------------------------------------------------------------------------------------- model card
def test_model_card_content(drafter: CoralDrafter, tmp_path: Path):
    card = render_model_card(drafter, "coral-tester/tiny-drafter")
    text = str(card)
    assert card.data.library_name == "coral_hf"
    assert card.data.pipeline_tag == "text-generation"
    assert set(card.data.tags) >= {"speculative-decoding", "coral", "eagle", "drafter"}
    assert card.data.base_model is None  # the tiny target is a local path, not a Hub id
    assert card.data.datasets == [RECIPE["dataset"]]
    assert 'coral_hf.load_drafter("coral-tester/tiny-drafter", target=target)' in text
    assert "| sharegpt-heldout | 5 | 3.10 | 1.80x | 2.10x | cpu |" in text
    assert "| loss.csra_weight | 0.1 |" in text
    assert "Batch size 1" in text and "Stop strings" in text and "Lossless" in text
    # Deterministic, and the same whether rendered from the model or from its saved directory.
    assert str(render_model_card(drafter, "coral-tester/tiny-drafter")) == text
    drafter.save_pretrained(tmp_path)
    assert str(render_model_card(tmp_path, "coral-tester/tiny-drafter")) == text

    config = drafter.config.__class__(
        **{
            **drafter.config.to_dict(),
            "training_recipe": None,
            "eval_results": None,
            "target_name_or_path": "HuggingFaceTB/SmolLM2-135M-Instruct",
        }
    )
    bare = str(render_model_card(config))
    assert "base_model: HuggingFaceTB/SmolLM2-135M-Instruct" in bare
    assert "may be untrained" in bare and "No measurements" in bare


def test_model_card_of_a_continued_drafter_lists_its_stages(drafter: CoralDrafter):
    """A drafter trained with `--init-from` shows one row per stage, not every earlier stage's settings flattened."""
    first = {
        "data": "anon8231489123/ShareGPT_Vicuna_unfiltered",
        "steps": 1350,
        "tokens_seen": 2544076,
        "optimizer": {"learning_rate": 5e-4},
        "heldout_eval": {"acc_step_1": 0.4033, "tau_sim": 1.6},
    }
    last = {
        "data": "regen.jsonl",
        "conversations": 5989,
        "steps": 2400,
        "tokens_seen": 2598276,
        "optimizer": {"learning_rate": 2e-4},
        "heldout_eval": {"acc_step_1": 0.6254, "tau_sim": 2.344},
        "continued_from": first,
    }
    config = drafter.config.__class__(**{**drafter.config.to_dict(), "training_recipe": last})
    card = render_model_card(config)
    text = str(card)
    assert "| 1 | anon8231489123/ShareGPT_Vicuna_unfiltered | - | 1350 | 2.54M | 0.0005 | 0.4033 | 1.6 |" in text
    assert "| 2 | regen.jsonl | 5989 | 2400 | 2.60M | 0.0002 | 0.6254 | 2.344 |" in text
    assert "continued_from." not in text and "| steps | 2400 |" in text
    assert card.data.datasets == ["anon8231489123/ShareGPT_Vicuna_unfiltered"]  # the earlier stage's Hub dataset


# ---------------------------------------------------------------------------------------------------- push / pull
def test_push_then_pull_in_fresh_process(hub: HubServer, drafter: CoralDrafter, target_dir: Path, tmp_path: Path):
    repo_id = f"{hub.username}/api-round-trip"
    commit = push_drafter(drafter, repo_id, commit_message="first drafter")
    assert hub.branch_head(repo_id) == commit.oid
    files = HfApi().list_repo_files(repo_id)
    assert sorted(files) == [
        ".gitattributes",
        "README.md",
        "config.json",
        "generation_config.json",
        "model.safetensors",
    ]
    assert len(hub.commit_ids(repo_id)) == 2  # "initial commit" + one commit holding everything
    pushed_card = hub.read_file(repo_id, "README.md").decode()
    assert pushed_card == str(render_model_card(drafter, repo_id))

    local = tmp_path / "local"
    drafter.save_pretrained(local)
    out = tmp_path / "pulled"
    code = f"""
        import torch
        from transformers import AutoModel, AutoModelForCausalLM
        import coral_hf
        from coral_hf.hub import pull_drafter
        target = AutoModelForCausalLM.from_pretrained({str(target_dir)!r}, dtype=torch.float32)
        drafter = pull_drafter({repo_id!r}, target=target, output_dir={str(out)!r})
        assert drafter.target is target
        again = coral_hf.CoralDrafter.from_pretrained({repo_id!r}, target=target)
        assert all(torch.equal(a, b) for a, b in zip(drafter.state_dict().values(), again.state_dict().values()))
        unattached = AutoModel.from_pretrained({repo_id!r})
        assert type(unattached).__name__ == "CoralDrafter" and unattached.target is None
        print("ok")
    """
    assert _run(code, subprocess_env(hub, tmp_path / "hf_home")).stdout.strip() == "ok"
    _assert_same_weights(local, out)
    assert (out / "README.md").read_text() == pushed_card
    assert json.loads((out / "config.json").read_text()) == json.loads((local / "config.json").read_text())


def test_datastore_travels_with_the_drafter_and_a_push_without_it_removes_it(
    hub: HubServer, drafter: CoralDrafter, target, tmp_path: Path
):
    from coral_hf.datastore import DATASTORE_FILE, NgramDatastore

    repo_id = f"{hub.username}/with-datastore"
    drafter.datastore = NgramDatastore.build([[5, 6, 7, 8]], source="answers")
    try:
        push_drafter(drafter, repo_id)
    finally:
        drafter.datastore = None
    assert DATASTORE_FILE in HfApi().list_repo_files(repo_id)
    pulled = pull_drafter(repo_id, target=target, output_dir=tmp_path / "pulled")
    assert pulled.datastore.source == "answers"
    assert pulled.datastore.lookup(torch.tensor([5, 6, 7]), 1).tolist() == [8]
    push_drafter(drafter, repo_id)  # the same drafter without its datastore: the stale file goes
    assert DATASTORE_FILE not in HfApi().list_repo_files(repo_id)


def test_drafter_push_to_hub_matches_push_drafter(hub: HubServer, drafter: CoralDrafter):
    a, b = f"{hub.username}/via-push-drafter", f"{hub.username}/via-push-to-hub"
    push_drafter(drafter, a)
    drafter.push_to_hub(b)
    assert HfApi().list_repo_files(a) == HfApi().list_repo_files(b)
    for name in ("model.safetensors", "config.json", "generation_config.json"):
        assert hub.read_file(a, name) == hub.read_file(b, name)
    card_b = hub.read_file(b, "README.md").decode()
    assert card_b == str(render_model_card(drafter, b))
    with pytest.raises(TypeError, match="safe_serialization"):  # an unsupported option is refused, not dropped
        drafter.push_to_hub(b, safe_serialization=False)


def test_cli_push_pull_and_offline_pull(
    hub: HubServer, drafter: CoralDrafter, target_dir: Path, tmp_path: Path, capsys
):
    """`coral-hf push`, then `coral-hf pull` in fresh processes: online, then offline from the cache."""
    repo_id = f"{hub.username}/cli-round-trip"
    local = tmp_path / "drafter"
    drafter.save_pretrained(local)
    hf_home = tmp_path / "hf_home"
    assert _cli_in_process(["push", str(local), repo_id, "--commit-message", "cli push"]) == 0
    assert hub.branch_head(repo_id) in capsys.readouterr().out
    assert HfApi().list_repo_commits(repo_id)[0].title == "cli push"
    card = hub.read_file(repo_id, "README.md").decode()
    assert card == str(render_model_card(drafter, repo_id))

    online_dir, offline_dir = tmp_path / "online", tmp_path / "offline"
    pulled = _cli(
        ["pull", repo_id, "--target", str(target_dir), "--output-dir", str(online_dir)],
        subprocess_env(hub, hf_home, token=False),
    )
    assert pulled.returncode == 0, pulled.stderr
    assert "matches target" in pulled.stdout
    _assert_same_weights(local, online_dir)
    assert (online_dir / "README.md").read_text() == card

    start = len(hub.requests)
    offline = _cli(
        ["pull", repo_id, "--target", str(target_dir), "--output-dir", str(offline_dir)],
        subprocess_env(hub, hf_home, offline=True, token=False),
    )
    assert offline.returncode == 0, offline.stderr
    assert _requests_since(hub, start) == []
    _assert_same_weights(local, offline_dir)
    assert (offline_dir / "README.md").read_text() == card


def test_pull_refuses_other_target(hub: HubServer, drafter: CoralDrafter, target_dir: Path, capsys):
    repo_id = f"{hub.username}/mismatch"
    push_drafter(drafter, repo_id)
    other = make_tiny_target("llama", seed=7)  # same shapes, other weights
    with pytest.raises(CoralTargetMismatchError, match="differ") as error:
        pull_drafter(repo_id, target=other)
    assert repo_id in str(error.value)
    qwen = make_tiny_target("qwen2")
    with pytest.raises(CoralTargetMismatchError, match="model_type"):
        pull_drafter(repo_id, target=qwen)

    qwen_dir = target_dir.parent / "qwen-target"
    qwen.save_pretrained(qwen_dir)
    assert _cli_in_process(["pull", repo_id, "--target", str(qwen_dir)]) == 2
    assert "model_type" in capsys.readouterr().err


def test_branches_missing_repo_and_wrong_revision(hub: HubServer, drafter: CoralDrafter, target, capsys):
    repo_id = f"{hub.username}/revisions"
    main_head = push_drafter(drafter, repo_id).oid
    experiment = _perturbed_copy(drafter, target, delta=0.25)
    push_drafter(experiment, repo_id, revision="experiment")  # the branch is created from main
    assert hub.branch_head(repo_id) == main_head
    _assert_same_state(pull_drafter(repo_id, target=target, revision="experiment"), experiment)
    _assert_same_state(pull_drafter(repo_id, target=target), drafter)

    missing = f"{hub.username}/no-such-drafter"
    with pytest.raises(RepositoryNotFoundError, match=f"Drafter repo '{missing}' was not found"):
        pull_drafter(missing, target=target)
    with pytest.raises(RevisionNotFoundError, match=f"Revision 'v9' does not exist in drafter repo '{repo_id}'"):
        pull_drafter(repo_id, target=target, revision="v9")

    assert _cli_in_process(["pull", missing, "--target", str(drafter.config.target_name_or_path)]) == 2
    assert f"Drafter repo '{missing}' was not found" in capsys.readouterr().err
    with hub_environment(hub, Path(drafter.config.target_name_or_path).parent / "empty-home", offline=True):
        with pytest.raises(LocalEntryNotFoundError, match="not in the local cache"):
            pull_drafter(repo_id, target=target)


def _malicious_pickle(path: Path, marker: Path) -> None:
    """A `pytorch_model.bin` that creates `marker` if anyone unpickles it."""

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    import pickle

    path.write_bytes(pickle.dumps({"fc.weight": Payload()}))


def test_pickle_checkpoints_are_refused_without_unpickling(
    hub: HubServer, drafter: CoralDrafter, target, tmp_path: Path
):
    marker = tmp_path / "UNPICKLED"
    pickled = tmp_path / "pickled"
    drafter.config.save_pretrained(pickled)
    _malicious_pickle(pickled / "pytorch_model.bin", marker)

    with pytest.raises(UnsafeCheckpointError, match="pickle"):
        push_drafter(pickled, f"{hub.username}/never-created")
    with pytest.raises(UnsafeCheckpointError, match="safetensors only"):
        coral_hf.hub.check_safetensors_only(pickled)
    with pytest.raises(UnsafeCheckpointError, match="pickle"):  # refused before transformers looks at it
        CoralDrafter.from_pretrained(pickled, target=target)

    repo_id = HfApi().create_repo("pickled").repo_id
    upload_folder(repo_id=repo_id, folder_path=pickled)
    start = len(hub.requests)
    with pytest.raises(UnsafeCheckpointError, match=f"'{repo_id}'.*pytorch_model.bin"):
        pull_drafter(repo_id, target=target)
    with pytest.raises(UnsafeCheckpointError):
        coral_hf.hub.check_safetensors_only(repo_id)
    with pytest.raises((UnsafeCheckpointError, OSError)):  # UnsafeCheckpointError once from_pretrained checks first
        CoralDrafter.from_pretrained(repo_id, target=target)
    assert not any("pytorch_model.bin" in record.path for record in _requests_since(hub, start))
    assert not marker.exists()


def test_failed_or_interrupted_push_keeps_previous_revision(hub: HubServer, drafter: CoralDrafter, target):
    repo_id = f"{hub.username}/atomic-push"
    first = push_drafter(drafter, repo_id).oid
    first_weights = hub.read_file(repo_id, "model.safetensors")
    changed = _perturbed_copy(drafter, target, delta=0.5)

    hub.fail_next("lfs_upload", status=403)  # the weights upload fails mid-push
    with pytest.raises(Exception, match="model.safetensors|403"):
        push_drafter(changed, repo_id)
    hub.fail_next("commit", status=500)  # every upload went through, then the commit fails
    with pytest.raises(HfHubHTTPError):
        push_drafter(changed, repo_id)
    hub.fail_next("commit_disconnect")  # the connection drops while the commit is being sent
    with pytest.raises(Exception):  # noqa: B017 - a transport error, whichever httpx raises
        push_drafter(changed, repo_id)
    assert hub.pending_failures() == {}  # each injected failure did hit a push
    assert hub.branch_head(repo_id) == first
    assert hub.read_file(repo_id, "model.safetensors") == first_weights
    pulled = pull_drafter(repo_id, target=target)
    _assert_same_state(pulled, drafter)

    second = push_drafter(changed, repo_id).oid
    assert hub.commit_ids(repo_id)[:2] == [second, first]
    old = pull_drafter(repo_id, target=target, revision=first)  # pinning an earlier revision
    _assert_same_state(old, drafter)


def _perturbed_copy(drafter: CoralDrafter, target, delta: float = 1.0) -> CoralDrafter:
    """The same drafter with other weights (distinct `delta`s give distinct files: the Hub deduplicates uploads)."""
    copy = CoralDrafter(drafter.config).attach(target)
    copy.load_state_dict(drafter.state_dict())
    with torch.no_grad():
        copy.fc.weight.add_(delta)
    return copy


def test_token_never_in_logs_card_or_storage(hub: HubServer, drafter: CoralDrafter, caplog, monkeypatch):
    import huggingface_hub.constants as constants

    monkeypatch.setattr(constants, "HF_DEBUG", True)  # most verbose client logging: curl dumps of every request
    monkeypatch.delenv("HF_TOKEN")  # the token only travels as an argument
    repo_id = f"{hub.username}/token-safety"
    with caplog.at_level(logging.DEBUG):
        for name in ("huggingface_hub", "coral_hf", "transformers"):
            logging.getLogger(name).setLevel(logging.DEBUG)
        commit = push_drafter(drafter, repo_id, token=hub.token, private=True)
    assert commit.oid == hub.branch_head(repo_id)
    assert "Pushing CORAL drafter" in caplog.text and "Request" in caplog.text  # logs were captured
    assert hub.token not in caplog.text
    assert hub.token not in hub.read_file(repo_id, "README.md").decode()
    for path in Path(hub.root).rglob("*"):
        if path.is_file():
            assert hub.token.encode() not in path.read_bytes(), path
    assert all(hub.token not in record.path for record in hub.requests)
    # and a push without any token is rejected by the server
    with pytest.raises(HfHubHTTPError):
        push_drafter(drafter, f"{hub.username}/anonymous", token=False)


# ---------------------------------------------------------------------------------------------------- training
def test_trainer_pushes_the_drafter_card(hub: HubServer, target, tmp_path: Path, caplog):
    from torch.utils.data import Dataset
    from transformers import Trainer, TrainingArguments

    torch.manual_seed(0)
    student = CoralDrafter.from_target(target)
    student.config.training_recipe = {"dataset": "random-token-sequences", "steps": 2}

    class Sequences(Dataset):
        def __len__(self):
            return 8

        def __getitem__(self, index):
            return {"input_ids": torch.randint(1, target.config.vocab_size, (12,))}

    class FeatureRegressionTrainer(DrafterCardTrainerMixin, Trainer):
        """Single-step EAGLE objective: predict the target's next feature from (next token, current feature)."""

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            input_ids = inputs["input_ids"]
            with torch.no_grad():
                features = target.model(input_ids).last_hidden_state
            out = model(input_ids=input_ids[:, 1:], hidden_states=features[:, :-1])
            loss = torch.nn.functional.smooth_l1_loss(out.last_hidden_state, features[:, 1:])
            return (loss, out) if return_outputs else loss

    repo_id = f"{hub.username}/trained-drafter"
    args = TrainingArguments(
        output_dir=str(tmp_path / "run"),
        max_steps=2,
        save_strategy="steps",
        save_steps=1,
        save_only_model=True,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        logging_steps=1,
        report_to=[],
        use_cpu=True,
        disable_tqdm=True,
        remove_unused_columns=False,
        push_to_hub=True,
        hub_model_id=repo_id,
        hub_strategy="every_save",  # authenticated by HF_TOKEN: a `hub_token` would be pickled into training_args.bin
    )
    trainer = FeatureRegressionTrainer(
        model=student, args=args, train_dataset=Sequences(), callbacks=[DrafterCardCallback()]
    )
    trainer.train()
    trainer._finish_current_push()
    checkpoint_titles = [c.title for c in HfApi().list_repo_commits(repo_id)]
    assert any(title.startswith("Training in progress") for title in checkpoint_titles)
    assert (tmp_path / "run" / "checkpoint-2" / "README.md").read_text() == str(render_model_card(student, repo_id))
    mid_training_card = hub.read_file(repo_id, "README.md").decode()
    assert mid_training_card == str(render_model_card(student, repo_id))

    trainer.push_to_hub()  # Trainer.create_model_card would write a generic card; the mixin keeps ours
    assert hub.read_file(repo_id, "README.md").decode() == str(render_model_card(student, repo_id))
    pulled = pull_drafter(repo_id, target=target)
    _assert_same_state(pulled, student)
    assert "training_args.bin" in HfApi().list_repo_files(repo_id)  # a pickle the Trainer pushes; pulls skip it

    # The Trainer pickles TrainingArguments into training_args.bin and pushes it: a `hub_token` there would leak.
    args.hub_token = hub.token
    with caplog.at_level(logging.WARNING, logger="coral_hf"):
        DrafterCardCallback().on_train_begin(args, trainer.state, trainer.control)
    assert "hub_token" in caplog.text and "HF_TOKEN" in caplog.text and hub.token not in caplog.text
