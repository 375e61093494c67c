"""A small, local, Hugging Face Hub-compatible HTTP server for tests.

It speaks the part of the Hub HTTP API that the real `huggingface_hub` client (and, through it,
`transformers`' `from_pretrained` / `push_to_hub`) uses to create repos, commit files, resolve and
download files, list trees and read repo info. Tests point the real client at it with
`HF_ENDPOINT=http://127.0.0.1:<port>` (see `hub_environment` and `subprocess_env`), so that the
Hub code paths of `coral_hf` are exercised end to end without internet.

What it implements (enough for `create_repo`, `whoami`, `upload_folder` / `create_commit`,
`create_branch` / `create_tag`, `list_repo_refs` / `list_repo_commits`, `hf_hub_download`,
`snapshot_download`, `model_info` / `repo_info`, `list_repo_tree`, `get_paths_info`,
`ModelCard.load` / `validate-yaml`):

- Repos (model / dataset / space) stored under a temp directory, public or private, owned by the
  user of the token that created them; tokens are checked on every write (`Authorization: Bearer`).
- A revision history per repo: every commit gets a 40-hex id and keeps its full file manifest, so
  any earlier commit stays downloadable; branches and tags point at commits.
- Atomic commits: the whole ndjson payload is read and validated, blobs are written
  content-addressed, the commit object is written, and only then does the branch move (one
  `os.replace` under a lock). A truncated body, an invalid operation or a failed LFS upload leave the
  branch where it was.
- Upload modes like the Hub: "regular" files go inline (base64 in the commit), LFS files go through
  the LFS batch API (`/{repo}.git/info/lfs/objects/batch`), a presigned-style PUT, and a verify call.
  Xet is not implemented: with LFS enabled, the client must run with `HF_HUB_DISABLE_XET=1`
  (`hub_environment` / `subprocess_env` set it), or start the server with `lfs=False`.
- Errors the client maps to typed exceptions: `X-Error-Code: RepoNotFound | RevisionNotFound |
  EntryNotFound` (404), 401 for missing/invalid credentials, 409 for existing repos/branches.
- Failure injection for tests (`fail_next`), and a request log without credentials (`requests`).

Not implemented: pull requests, xet, gated repos, pagination (all listings fit one page), git
protocol. It is a test fixture, not a Hub.
"""

from __future__ import annotations

import base64
import contextlib
import fnmatch
import hashlib
import hmac
import json
import os
import re
import secrets
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

__all__ = ["HubError", "HubServer", "hub_environment", "subprocess_env"]

REPO_TYPES = ("model", "dataset", "space")
_URL_PREFIX_TO_TYPE = {"datasets": "dataset", "spaces": "space"}
_API_PLURAL_TO_TYPE = {"models": "model", "datasets": "dataset", "spaces": "space"}
DEFAULT_LFS_PATTERNS = (
    "*.safetensors",
    "*.bin",
    "*.pt",
    "*.pth",
    "*.ckpt",
    "*.h5",
    "*.msgpack",
    "*.onnx",
    "*.gguf",
    "*.npy",
    "*.zip",
    "*.tar.gz",
)
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024
GITATTRIBUTES = "".join(f"{pattern} filter=lfs diff=lfs merge=lfs -text\n" for pattern in DEFAULT_LFS_PATTERNS)
_COMMIT_RE = re.compile(r"^[0-9a-f]{7,40}$")
_REPO_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob with this content (what the Hub reports as `oid` / `blobId`)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    """The git-lfs pointer file stored in git for an LFS-tracked file."""
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class HubError(Exception):
    """An HTTP error answer, with the `X-Error-Code` header the client maps to a typed exception."""

    def __init__(
        self,
        status: int,
        message: str,
        error_code: str | None = None,
        headers: dict | None = None,
        body: dict | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_code = error_code
        self.headers = headers or {}
        self.body = body or {}


@dataclass
class _Request:
    method: str
    path: str
    user: str | None
    status: int = 0


@dataclass
class HubServer:
    """A Hub-compatible server on 127.0.0.1 (random free port), storing repos in `root`.

    Use as a context manager, or call `start()` / `stop()`. `token` authenticates as `username`
    (member of `orgs`); `add_user` registers more. With `lfs=True` (the default) files matching
    `lfs_patterns`, binary files and files over 10 MB are stored as LFS objects like on the Hub.
    """

    root: Path | None = None
    username: str = "coral-tester"
    orgs: tuple[str, ...] = ("coral-org",)
    token: str = field(default_factory=lambda: "hf_test_" + secrets.token_hex(16))
    lfs: bool = True
    lfs_patterns: tuple[str, ...] = DEFAULT_LFS_PATTERNS

    def __post_init__(self) -> None:
        self._tmp: tempfile.TemporaryDirectory | None = None
        if self.root is None:
            self._tmp = tempfile.TemporaryDirectory(prefix="coral-hub-")
            self.root = Path(self._tmp.name)
        self.root = Path(self.root)
        (self.root / "objects").mkdir(parents=True, exist_ok=True)
        (self.root / "repos").mkdir(parents=True, exist_ok=True)
        self.users: dict[str, dict[str, Any]] = {}
        self.tokens: dict[str, str] = {}
        self.add_user(self.username, self.token, orgs=self.orgs)
        self.lock = threading.RLock()
        self.requests: list[_Request] = []
        self._failures: dict[str, list[int]] = {}
        self._signing_key = secrets.token_bytes(16)
        self._commit_counter = 0
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("HubServer is not started")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> HubServer:
        handler = type("BoundHubHandler", (_HubHandler,), {"hub": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="hub-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ test helpers
    def add_user(self, name: str, token: str, orgs: tuple[str, ...] = ()) -> None:
        self.users[name] = {"name": name, "orgs": list(orgs)}
        self.tokens[token] = name

    def fail_next(self, kind: str, times: int = 1, status: int = 500) -> None:
        """Make the next `times` requests of `kind` fail with `status`.

        Kinds: "commit" (the commit POST is read, then answered with `status`), "lfs_upload" (the LFS
        PUT is read, then refused), "commit_disconnect" (the server reads half of the commit body
        and drops the connection without answering, like a network failure).
        """
        with self.lock:
            self._failures.setdefault(kind, []).extend([status] * times)

    def pending_failures(self) -> dict[str, int]:
        """Injected failures not consumed yet, by kind."""
        with self.lock:
            return {kind: len(statuses) for kind, statuses in self._failures.items() if statuses}

    def clear_failures(self) -> None:
        with self.lock:
            self._failures.clear()

    def _take_failure(self, kind: str) -> int | None:
        with self.lock:
            pending = self._failures.get(kind)
            return pending.pop(0) if pending else None

    def branch_head(self, repo_id: str, branch: str = "main", repo_type: str = "model") -> str:
        """The commit a branch points at (reads the store directly, no HTTP)."""
        return self._read_refs(self._repo_dir(repo_type, repo_id))["branches"][branch]

    def commit_ids(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> list[str]:
        """Commit ids reachable from `revision`, newest first (reads the store directly)."""
        repo_dir = self._repo_dir(repo_type, repo_id)
        sha = self._resolve(repo_dir, repo_type, repo_id, revision)
        ids = []
        while sha is not None:
            ids.append(sha)
            parents = self._read_commit(repo_dir, sha)["parents"]
            sha = parents[0] if parents else None
        return ids

    def read_file(self, repo_id: str, path: str, revision: str = "main", repo_type: str = "model") -> bytes:
        """The content of a file at a revision (reads the store directly)."""
        repo_dir = self._repo_dir(repo_type, repo_id)
        commit = self._read_commit(repo_dir, self._resolve(repo_dir, repo_type, repo_id, revision))
        return self._object_path(commit["files"][path]["sha256"]).read_bytes()

    # ------------------------------------------------------------------ storage
    def _repo_dir(self, repo_type: str, repo_id: str) -> Path:
        return self.root / "repos" / f"{repo_type}s" / repo_id

    def _object_path(self, sha256: str) -> Path:
        return self.root / "objects" / sha256[:2] / sha256

    def _store_object(self, data: bytes) -> str:
        sha256 = hashlib.sha256(data).hexdigest()
        path = self._object_path(sha256)
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            _atomic_write(path, data)
        return sha256

    @staticmethod
    def _read_refs(repo_dir: Path) -> dict[str, dict[str, str]]:
        return json.loads((repo_dir / "refs.json").read_text())

    @staticmethod
    def _write_refs(repo_dir: Path, refs: dict[str, dict[str, str]]) -> None:
        _atomic_write(repo_dir / "refs.json", json.dumps(refs, indent=1).encode())

    @staticmethod
    def _read_commit(repo_dir: Path, sha: str) -> dict[str, Any]:
        return json.loads((repo_dir / "commits" / f"{sha}.json").read_text())

    def _repo_meta(self, repo_type: str, repo_id: str, user: str | None, *, write: bool = False) -> tuple[Path, dict]:
        """Repo dir + metadata, or the error the Hub gives (private repos look missing to others)."""
        repo_dir = self._repo_dir(repo_type, repo_id)
        meta_path = repo_dir / "repo.json"
        if "/" not in repo_id or not meta_path.exists():
            raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        meta = json.loads(meta_path.read_text())
        can_write = user is not None and self._can_write(user, repo_id.split("/")[0])
        if meta["private"] and not can_write:
            raise HubError(404 if user else 401, f"Repository {repo_id} not found", "RepoNotFound")
        if write and not can_write:
            raise HubError(403, f"You don't have the rights to write to {repo_id}")
        return repo_dir, meta

    def _can_write(self, user: str, namespace: str) -> bool:
        return namespace == user or namespace in self.users[user]["orgs"]

    def _resolve(self, repo_dir: Path, repo_type: str, repo_id: str, revision: str) -> str:
        refs = self._read_refs(repo_dir)
        if revision in refs["branches"]:
            return refs["branches"][revision]
        if revision in refs["tags"]:
            return refs["tags"][revision]
        if _COMMIT_RE.match(revision):
            matches = [p.stem for p in (repo_dir / "commits").glob(f"{revision}*.json")]
            if len(matches) == 1:
                return matches[0]
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def _new_commit(
        self, repo_dir: Path, parent: str | None, files: dict[str, dict], title: str, message: str, author: str
    ) -> str:
        with self.lock:
            self._commit_counter += 1
            counter = self._commit_counter
        body = json.dumps(
            {"parent": parent, "files": files, "title": title, "message": message, "n": counter, "t": time.time()},
            sort_keys=True,
        ).encode()
        sha = hashlib.sha1(b"commit %d\0" % len(body) + body).hexdigest()
        commit = {
            "id": sha,
            "parents": [parent] if parent else [],
            "title": title,
            "message": message,
            "date": _now(),
            "authors": [{"user": author}],
            "files": files,
        }
        (repo_dir / "commits").mkdir(parents=True, exist_ok=True)
        _atomic_write(repo_dir / "commits" / f"{sha}.json", json.dumps(commit, indent=1).encode())
        return sha

    def _file_entry(self, data: bytes, *, lfs: bool) -> dict[str, Any]:
        sha256 = self._store_object(data)
        if lfs:
            pointer = lfs_pointer(sha256, len(data))
            return {
                "sha256": sha256,
                "size": len(data),
                "lfs": True,
                "blob_id": git_blob_sha1(pointer),
                "pointer_size": len(pointer),
            }
        return {"sha256": sha256, "size": len(data), "lfs": False, "blob_id": git_blob_sha1(data)}

    def _is_lfs_path(self, path: str, size: int, sample: bytes) -> bool:
        if not self.lfs:
            return False
        name = path.rsplit("/", 1)[-1]
        if any(fnmatch.fnmatch(name, pattern) or fnmatch.fnmatch(path, pattern) for pattern in self.lfs_patterns):
            return True
        return size > LFS_SIZE_THRESHOLD or b"\x00" in sample

    def _sign(self, oid: str) -> str:
        return hmac.new(self._signing_key, oid.encode(), hashlib.sha256).hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------- handler
class _HubHandler(BaseHTTPRequestHandler):
    hub: HubServer  # set on the bound subclass
    protocol_version = "HTTP/1.1"
    server_version = "CoralTestHub/0.1"
    timeout = 30  # seconds a connection may stay silent before the server drops it

    # quiet: the default handler prints every request to stderr
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    # -------------------------------------------------------------- plumbing
    def do_GET(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def do_HEAD(self) -> None:  # noqa: N802
        self._dispatch("HEAD")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def do_DELETE(self) -> None:  # noqa: N802
        self._dispatch("DELETE")

    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        self.query = parse_qs(split.query)
        self.segments = [unquote(s) for s in split.path.split("/") if s]
        self.user = self._authenticate()
        record = _Request(method=method, path=split.path, user=self.user)
        with self.hub.lock:
            self.hub.requests.append(record)
        self._body: bytes | None = None
        try:
            self._route(method)
        except HubError as err:
            self._drain_body()
            record.status = err.status
            self._send_error(err)
            return
        except _Disconnect:
            record.status = -1
            self.close_connection = True
            return
        except Exception as err:  # a bug in the fixture: answer 500 with the reason, keep serving
            record.status = 500
            self._send_error(HubError(500, f"Internal test-hub error: {err!r}"))
            return
        record.status = self._status

    def _authenticate(self) -> str | None:
        header = self.headers.get("Authorization", "")
        if not header.lower().startswith("bearer "):
            return None
        token = header[7:].strip()
        user = self.hub.tokens.get(token)
        self.invalid_token = user is None
        return user

    def _require_user(self) -> str:
        if self.user is None:
            if getattr(self, "invalid_token", False):
                raise HubError(401, "Invalid credentials in Authorization header")
            raise HubError(401, "Authorization header is required for this operation")
        return self.user

    def _read_body(self, *, limit: int | None = None) -> bytes:
        if self._body is not None:
            return self._body
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size_line = self.rfile.readline()
                if not size_line:
                    raise _Disconnect()
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    break
                chunk = self.rfile.read(size)
                if len(chunk) < size:
                    raise _Disconnect()
                chunks.append(chunk)
                self.rfile.readline()
            self._body = b"".join(chunks)
            return self._body
        length = int(self.headers.get("Content-Length") or 0)
        to_read = length if limit is None else min(limit, length)
        data = self.rfile.read(to_read) if to_read else b""
        if len(data) < to_read:
            # the client went away mid-body: nothing of this request may take effect
            raise _Disconnect()
        self._body = data
        return data

    def _drain_body(self) -> None:
        if self._body is None:
            with contextlib.suppress(Exception):
                self._read_body()

    def _json_body(self) -> Any:
        body = self._read_body()
        try:
            return json.loads(body or b"{}")
        except json.JSONDecodeError as err:
            raise HubError(400, f"Invalid JSON body: {err}") from err

    def _send(
        self,
        status: int,
        body: bytes = b"",
        headers: dict[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        self._status = status
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _send_json(self, payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), headers)

    def _send_error(self, err: HubError) -> None:
        headers = dict(err.headers)
        headers["X-Error-Message"] = err.message.replace("\n", " ")
        if err.error_code:
            headers["X-Error-Code"] = err.error_code
        self._send(err.status, json.dumps({"error": err.message, **err.body}).encode(), headers)

    # -------------------------------------------------------------- routing
    def _route(self, method: str) -> None:
        seg = self.segments
        hub = self.hub
        if seg[:1] == ["api"]:
            rest = seg[1:]
            if rest == ["whoami-v2"] and method == "GET":
                return self._whoami()
            if rest == ["repos", "create"] and method == "POST":
                return self._create_repo()
            if rest == ["repos", "delete"] and method in ("POST", "DELETE"):
                return self._delete_repo()
            if rest == ["validate-yaml"] and method == "POST":
                return self._validate_yaml()
            if len(rest) >= 3 and rest[0] in _API_PLURAL_TO_TYPE:
                repo_type = _API_PLURAL_TO_TYPE[rest[0]]
                repo_id = f"{rest[1]}/{rest[2]}"
                action, args = (rest[3], rest[4:]) if len(rest) > 3 else (None, [])
                return self._repo_api(method, repo_type, repo_id, action, args)
            raise HubError(404, f"Unknown API route: /{'/'.join(seg)}")
        if seg[:2] == ["_lfs", "upload"] and len(seg) == 3 and method == "PUT":
            return self._lfs_upload(seg[2])
        # /{prefix}{ns}/{name}.git/info/lfs/objects/{batch|verify} and /{prefix}{ns}/{name}/resolve/{rev}/{path}
        repo_type = "model"
        if seg and seg[0] in _URL_PREFIX_TO_TYPE and len(seg) > 3:
            repo_type, seg = _URL_PREFIX_TO_TYPE[seg[0]], seg[1:]
        if len(seg) >= 6 and seg[1].endswith(".git") and seg[2:5] == ["info", "lfs", "objects"] and method == "POST":
            repo_id = f"{seg[0]}/{seg[1][:-4]}"
            if seg[5] == "batch":
                return self._lfs_batch(repo_type, repo_id)
            if seg[5] == "verify":
                return self._lfs_verify(repo_type, repo_id)
        if len(seg) >= 5 and seg[2] == "resolve" and method in ("GET", "HEAD"):
            return self._resolve_file(repo_type, f"{seg[0]}/{seg[1]}", seg[3], "/".join(seg[4:]))
        del hub
        raise HubError(404, f"Not found: {self.path}")

    def _repo_api(self, method: str, repo_type: str, repo_id: str, action: str | None, args: list[str]) -> None:
        if action is None and method == "GET":
            return self._repo_info(repo_type, repo_id, "main")
        if action == "revision" and method == "GET" and args:
            return self._repo_info(repo_type, repo_id, "/".join(args))
        if action == "tree" and method == "GET" and args:
            return self._tree(repo_type, repo_id, args[0], "/".join(args[1:]))
        if action == "refs" and method == "GET":
            return self._refs(repo_type, repo_id)
        if action == "commits" and method == "GET" and args:
            return self._commits(repo_type, repo_id, "/".join(args))
        if action == "paths-info" and method == "POST" and args:
            return self._paths_info(repo_type, repo_id, "/".join(args))
        if action == "preupload" and method == "POST" and args:
            return self._preupload(repo_type, repo_id, "/".join(args))
        if action == "commit" and method == "POST" and args:
            return self._commit(repo_type, repo_id, "/".join(args))
        if action == "branch" and args and method in ("POST", "DELETE"):
            return self._branch(method, repo_type, repo_id, "/".join(args))
        if action == "tag" and args and method in ("POST", "DELETE"):
            return self._tag(method, repo_type, repo_id, "/".join(args))
        if action == "settings" and method == "PUT":
            return self._settings(repo_type, repo_id)
        raise HubError(404, f"Unknown repo API route: {action} {args}")

    # -------------------------------------------------------------- account
    def _whoami(self) -> None:
        user = self._require_user()
        self._send_json(
            {
                "type": "user",
                "id": hashlib.sha1(user.encode()).hexdigest()[:24],
                "name": user,
                "fullname": user,
                "email": None,
                "orgs": [{"type": "org", "name": org} for org in self.hub.users[user]["orgs"]],
                "auth": {"type": "access_token", "accessToken": {"displayName": "test", "role": "write"}},
            }
        )

    def _validate_yaml(self) -> None:
        import yaml

        content = self._json_body().get("content", "")
        match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", content, flags=re.S)
        if match is None:
            return self._send_json({"errors": [], "warnings": [{"message": "Empty or missing yaml metadata"}]})
        try:
            data = yaml.safe_load(match.group(1))
        except yaml.YAMLError as err:
            return self._send_json({"errors": [{"message": f"Invalid YAML: {err}"}]}, status=400)
        if data is not None and not isinstance(data, dict):
            return self._send_json({"errors": [{"message": "YAML metadata must be a mapping"}]}, status=400)
        self._send_json({"errors": [], "warnings": []})

    # -------------------------------------------------------------- repos
    def _create_repo(self) -> None:
        user = self._require_user()
        payload = self._json_body()
        repo_type = payload.get("type") or "model"
        if repo_type not in REPO_TYPES:
            raise HubError(400, f"Invalid repo type {repo_type!r}")
        name = payload.get("name") or ""
        namespace = payload.get("organization") or user
        if not _REPO_NAME_RE.match(name) or "--" in name or ".." in name:
            raise HubError(400, f"Invalid repo name {name!r}")
        if not self.hub._can_write(user, namespace):
            raise HubError(403, f"You don't have the rights to create a repo under {namespace!r}")
        repo_id = f"{namespace}/{name}"
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        url = f"{self._base_url()}/{prefix}{repo_id}"
        repo_dir = self.hub._repo_dir(repo_type, repo_id)
        with self.hub.lock:
            if (repo_dir / "repo.json").exists():
                raise HubError(409, "You already created this model repo", body={"url": url})
            repo_dir.mkdir(parents=True, exist_ok=True)
            files = {".gitattributes": self.hub._file_entry(GITATTRIBUTES.encode(), lfs=False)}
            sha = self.hub._new_commit(repo_dir, None, files, "initial commit", "", user)
            self.hub._write_refs(repo_dir, {"branches": {"main": sha}, "tags": {}})
            private = payload.get("visibility") == "private" or bool(payload.get("private"))
            meta = {"id": repo_id, "type": repo_type, "private": private, "createdAt": _now(), "owner": user}
            _atomic_write(repo_dir / "repo.json", json.dumps(meta).encode())
        self._send_json({"url": url, "name": repo_id, "id": hashlib.sha1(repo_id.encode()).hexdigest()[:24]})

    def _delete_repo(self) -> None:
        import shutil

        user = self._require_user()
        payload = self._json_body()
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload.get('organization') or user}/{payload.get('name')}"
        repo_dir, _ = self.hub._repo_meta(repo_type, repo_id, user, write=True)
        with self.hub.lock:
            shutil.rmtree(repo_dir)
        self._send_json({})

    def _settings(self, repo_type: str, repo_id: str) -> None:
        repo_dir, meta = self.hub._repo_meta(repo_type, repo_id, self._require_user(), write=True)
        payload = self._json_body()
        if "private" in payload:
            meta["private"] = bool(payload["private"])
        if "visibility" in payload:
            meta["private"] = payload["visibility"] == "private"
        _atomic_write(repo_dir / "repo.json", json.dumps(meta).encode())
        self._send_json({"private": meta["private"]})

    def _base_url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    # -------------------------------------------------------------- read API
    def _repo_info(self, repo_type: str, repo_id: str, revision: str) -> None:
        hub = self.hub
        repo_dir, meta = hub._repo_meta(repo_type, repo_id, self.user)
        sha = hub._resolve(repo_dir, repo_type, repo_id, revision)
        commit = hub._read_commit(repo_dir, sha)
        card_data = _card_metadata(hub, commit)
        info: dict[str, Any] = {
            "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],
            "id": repo_id,
            "author": repo_id.split("/")[0],
            "sha": sha,
            "lastModified": commit["date"],
            "createdAt": meta["createdAt"],
            "private": meta["private"],
            "gated": False,
            "disabled": False,
            "downloads": 0,
            "likes": 0,
            "tags": list(card_data.get("tags") or []) if isinstance(card_data, dict) else [],
            "siblings": [_sibling(path, entry) for path, entry in sorted(commit["files"].items())],
        }
        if repo_type == "model":
            if isinstance(card_data, dict):
                for key in ("library_name", "pipeline_tag"):
                    if card_data.get(key):
                        info[key] = card_data[key]
            config = _config_summary(hub, commit)
            if config is not None:
                info["config"] = config
        if card_data:
            info["cardData"] = card_data
        self._send_json(info)

    def _tree(self, repo_type: str, repo_id: str, revision: str, path: str) -> None:
        hub = self.hub
        repo_dir, _ = hub._repo_meta(repo_type, repo_id, self.user)
        sha = hub._resolve(repo_dir, repo_type, repo_id, revision)
        files = hub._read_commit(repo_dir, sha)["files"]
        recursive = self.query.get("recursive", ["false"])[0].lower() in ("1", "true")
        path = path.strip("/")
        prefix = f"{path}/" if path else ""
        if path and path not in _all_dirs(files):
            raise HubError(
                404, f"{path} does not exist at revision {revision}", "EntryNotFound", {"X-Repo-Commit": sha}
            )
        entries: list[dict[str, Any]] = []
        seen_dirs: set[str] = set()
        for file_path in sorted(files):
            if not file_path.startswith(prefix):
                continue
            relative = file_path[len(prefix) :]
            parts = relative.split("/")
            # directories between `path` and this file
            for depth in range(1, len(parts)):
                directory = prefix + "/".join(parts[:depth])
                if directory not in seen_dirs and (recursive or depth == 1):
                    seen_dirs.add(directory)
                    entries.append(
                        {"type": "directory", "oid": _tree_id(files, directory), "size": 0, "path": directory}
                    )
            if recursive or len(parts) == 1:
                entries.append(_tree_file(file_path, files[file_path]))
        self._send_json(entries)

    def _paths_info(self, repo_type: str, repo_id: str, revision: str) -> None:
        hub = self.hub
        repo_dir, _ = hub._repo_meta(repo_type, repo_id, self.user)
        sha = hub._resolve(repo_dir, repo_type, repo_id, revision)
        files = hub._read_commit(repo_dir, sha)["files"]
        body = self._read_body().decode()
        content_type = self.headers.get("Content-Type", "")
        if "json" in content_type:
            paths = json.loads(body or "{}").get("paths", [])
        else:
            paths = parse_qs(body).get("paths", [])
        dirs = _all_dirs(files)
        result = []
        for path in paths:
            path = path.strip("/")
            if path in files:
                result.append(_tree_file(path, files[path]))
            elif path in dirs:
                result.append({"type": "directory", "oid": _tree_id(files, path), "size": 0, "path": path})
        self._send_json(result)

    def _refs(self, repo_type: str, repo_id: str) -> None:
        repo_dir, _ = self.hub._repo_meta(repo_type, repo_id, self.user)
        refs = self.hub._read_refs(repo_dir)
        self._send_json(
            {
                "branches": [_ref(name, "heads", sha) for name, sha in refs["branches"].items()],
                "tags": [_ref(name, "tags", sha) for name, sha in refs["tags"].items()],
                "converts": [],
                "pullRequests": [],
            }
        )

    def _commits(self, repo_type: str, repo_id: str, revision: str) -> None:
        self.hub._repo_meta(repo_type, repo_id, self.user)
        repo_dir = self.hub._repo_dir(repo_type, repo_id)
        out = []
        for sha in self.hub.commit_ids(repo_id, revision, repo_type):
            commit = self.hub._read_commit(repo_dir, sha)
            out.append({key: commit[key] for key in ("id", "title", "message", "date", "authors")})
        self._send_json(out)

    def _resolve_file(self, repo_type: str, repo_id: str, revision: str, path: str) -> None:
        hub = self.hub
        repo_dir, _ = hub._repo_meta(repo_type, repo_id, self.user)
        sha = hub._resolve(repo_dir, repo_type, repo_id, revision)
        files = hub._read_commit(repo_dir, sha)["files"]
        if path not in files:
            raise HubError(
                404, f"Entry not found: {path} at revision {revision}", "EntryNotFound", {"X-Repo-Commit": sha}
            )
        entry = files[path]
        headers = {"X-Repo-Commit": sha, "Accept-Ranges": "bytes", "Cache-Control": "no-cache"}
        if entry["lfs"]:
            headers["ETag"] = f'"{entry["sha256"]}"'
            headers["X-Linked-Etag"] = f'"{entry["sha256"]}"'
            headers["X-Linked-Size"] = str(entry["size"])
        else:
            headers["ETag"] = f'"{entry["blob_id"]}"'
        headers["Content-Disposition"] = f'inline; filename="{path.rsplit("/", 1)[-1]}"'
        data = hub._object_path(entry["sha256"]).read_bytes()
        status = 200
        range_header = self.headers.get("Range")
        if range_header and self.command == "GET":
            match = re.fullmatch(r"\s*bytes=(\d*)-(\d*)\s*", range_header)
            if match and (match.group(1) or match.group(2)):
                size = len(data)
                if match.group(1):
                    start = int(match.group(1))
                    end = int(match.group(2)) if match.group(2) else size - 1
                else:
                    start, end = max(size - int(match.group(2)), 0), size - 1
                if start >= size:
                    raise HubError(
                        416, "Requested range not satisfiable", headers={"Content-Range": f"bytes */{size}"}
                    )
                end = min(end, size - 1)
                headers["Content-Range"] = f"bytes {start}-{end}/{size}"
                data, status = data[start : end + 1], 206
        self._send(status, data, headers, content_type="application/octet-stream")

    # -------------------------------------------------------------- write API
    def _writable_branch(self, repo_type: str, repo_id: str, revision: str) -> tuple[Path, str]:
        user = self._require_user()
        repo_dir, _ = self.hub._repo_meta(repo_type, repo_id, user, write=True)
        if revision not in self.hub._read_refs(repo_dir)["branches"]:
            raise HubError(404, f"Invalid rev id: {revision} (commits go to an existing branch)", "RevisionNotFound")
        return repo_dir, user

    def _preupload(self, repo_type: str, repo_id: str, revision: str) -> None:
        repo_dir, _ = self._writable_branch(repo_type, repo_id, revision)
        current = self.hub._read_commit(repo_dir, self.hub._read_refs(repo_dir)["branches"][revision])["files"]
        out = []
        for item in self._json_body().get("files", []):
            path, size = item["path"], int(item.get("size", 0))
            sample = base64.b64decode(item.get("sample", ""))
            lfs = self.hub._is_lfs_path(path, size, sample)
            existing = current.get(path)
            oid = None
            if existing is not None:
                oid = existing["sha256"] if existing["lfs"] else existing["blob_id"]
            out.append({"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid})
        self._send_json({"files": out, "commitOid": None})

    def _commit(self, repo_type: str, repo_id: str, revision: str) -> None:
        hub = self.hub
        repo_dir, user = self._writable_branch(repo_type, repo_id, revision)
        if self.query.get("create_pr", ["0"])[0] in ("1", "true"):
            raise HubError(400, "Pull requests are not supported by the test hub")
        if hub._take_failure("commit_disconnect") is not None:
            length = int(self.headers.get("Content-Length") or 0)
            self._read_body(limit=length // 2)
            raise _Disconnect()
        body = self._read_body()
        injected = hub._take_failure("commit")
        if injected is not None:
            raise HubError(injected, "Injected commit failure (test hub)")

        # 1. Parse and validate everything before touching any ref.
        header: dict[str, Any] | None = None
        operations: list[tuple[str, dict[str, Any]]] = []
        for number, line in enumerate(body.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                item = json.loads(line)
                key, value = item["key"], item["value"]
            except (json.JSONDecodeError, KeyError, TypeError) as err:
                raise HubError(400, f"Malformed commit payload at line {number}: {err}") from err
            if key == "header":
                header = value
            elif key in ("file", "lfsFile", "deletedFile", "deletedFolder"):
                operations.append((key, value))
            else:
                raise HubError(400, f"Unsupported commit operation {key!r} at line {number}")
        if header is None or not header.get("summary"):
            raise HubError(400, "Commit payload has no header with a summary")

        with hub.lock:
            refs = hub._read_refs(repo_dir)
            parent = refs["branches"][revision]
            if header.get("parentCommit") and not parent.startswith(header["parentCommit"]):
                raise HubError(412, f"A commit has happened since {header['parentCommit']}; parent is {parent}")
            files = dict(hub._read_commit(repo_dir, parent)["files"])
            for key, value in operations:
                path = _clean_path(value.get("path", ""))
                if key == "file":
                    if value.get("encoding", "base64") != "base64":
                        raise HubError(400, f"Unsupported encoding for {path}")
                    try:
                        data = base64.b64decode(value["content"], validate=True)
                    except (ValueError, KeyError) as err:
                        raise HubError(400, f"Invalid base64 content for {path}") from err
                    files[path] = hub._file_entry(data, lfs=False)
                elif key == "lfsFile":
                    oid = value.get("oid", "")
                    obj = hub._object_path(oid) if re.fullmatch(r"[0-9a-f]{64}", oid) else None
                    if obj is None or not obj.exists():
                        raise HubError(422, f"LFS object {oid} for {path} was never uploaded")
                    size = obj.stat().st_size
                    pointer = lfs_pointer(oid, size)
                    files[path] = {
                        "sha256": oid,
                        "size": size,
                        "lfs": True,
                        "blob_id": git_blob_sha1(pointer),
                        "pointer_size": len(pointer),
                    }
                elif key == "deletedFile":
                    if path not in files:
                        raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                    del files[path]
                else:  # deletedFolder
                    prefix = path.rstrip("/") + "/"
                    doomed = [p for p in files if p.startswith(prefix)]
                    if not doomed:
                        raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                    for p in doomed:
                        del files[p]
            # 2. Write the immutable commit object, then move the branch in one atomic step.
            sha = hub._new_commit(repo_dir, parent, files, header["summary"], header.get("description", ""), user)
            refs["branches"][revision] = sha
            hub._write_refs(repo_dir, refs)
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        self._send_json(
            {
                "success": True,
                "commitOid": sha,
                "commitUrl": f"{self._base_url()}/{prefix}{repo_id}/commit/{sha}",
                "hookOutput": "",
                "pullRequestUrl": None,
            }
        )

    def _branch(self, method: str, repo_type: str, repo_id: str, branch: str) -> None:
        hub = self.hub
        repo_dir, _ = hub._repo_meta(repo_type, repo_id, self._require_user(), write=True)
        payload = self._json_body() if method == "POST" else {}
        with hub.lock:
            refs = hub._read_refs(repo_dir)
            if method == "DELETE":
                if branch not in refs["branches"] or branch == "main":
                    raise HubError(
                        404 if branch != "main" else 403,
                        f"Cannot delete branch {branch}",
                        "RevisionNotFound" if branch != "main" else None,
                    )
                del refs["branches"][branch]
            else:
                if branch in refs["branches"]:
                    raise HubError(409, f"Reference already exists: refs/heads/{branch}")
                start = payload.get("startingPoint") or "main"
                refs["branches"][branch] = hub._resolve(repo_dir, repo_type, repo_id, start)
            hub._write_refs(repo_dir, refs)
        self._send_json({})

    def _tag(self, method: str, repo_type: str, repo_id: str, target: str) -> None:
        hub = self.hub
        repo_dir, _ = hub._repo_meta(repo_type, repo_id, self._require_user(), write=True)
        with hub.lock:
            refs = hub._read_refs(repo_dir)
            if method == "DELETE":
                if target not in refs["tags"]:
                    raise HubError(404, f"Tag {target} not found", "RevisionNotFound")
                del refs["tags"][target]
            else:
                tag = self._json_body().get("tag")
                if not tag:
                    raise HubError(400, "Missing tag name")
                if tag in refs["tags"]:
                    raise HubError(409, f"Tag {tag} already exists")
                refs["tags"][tag] = hub._resolve(repo_dir, repo_type, repo_id, target)
            hub._write_refs(repo_dir, refs)
        self._send_json({})

    # -------------------------------------------------------------- LFS
    def _lfs_batch(self, repo_type: str, repo_id: str) -> None:
        user = self._require_user()
        self.hub._repo_meta(repo_type, repo_id, user, write=True)
        payload = self._json_body()
        if payload.get("operation") != "upload":
            raise HubError(400, "Only the upload operation is supported by the test hub")
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        objects = []
        for obj in payload.get("objects", []):
            oid, size = obj["oid"], int(obj["size"])
            entry: dict[str, Any] = {"oid": oid, "size": size, "authenticated": True}
            if not re.fullmatch(r"[0-9a-f]{64}", oid):
                entry["error"] = {"code": 422, "message": f"Invalid oid {oid}"}
            elif not self.hub._object_path(oid).exists():
                entry["actions"] = {
                    "upload": {"href": f"{self._base_url()}/_lfs/upload/{oid}?size={size}&sig={self.hub._sign(oid)}"},
                    "verify": {"href": f"{self._base_url()}/{prefix}{repo_id}.git/info/lfs/objects/verify"},
                }
            objects.append(entry)
        self._send(
            200,
            json.dumps({"transfer": "basic", "objects": objects}).encode(),
            content_type="application/vnd.git-lfs+json",
        )

    def _lfs_upload(self, oid: str) -> None:
        # Presigned-style URL: no Authorization header, the signature in the query authorises it.
        if not hmac.compare_digest(self.query.get("sig", [""])[0], self.hub._sign(oid)):
            raise HubError(403, "Invalid upload signature")
        data = self._read_body()
        injected = self.hub._take_failure("lfs_upload")
        if injected is not None:
            raise HubError(injected, "Injected LFS upload failure (test hub)")
        expected_size = int(self.query.get("size", [str(len(data))])[0])
        if len(data) != expected_size or hashlib.sha256(data).hexdigest() != oid:
            raise HubError(400, f"Uploaded content does not match oid {oid} / size {expected_size}")
        self.hub._store_object(data)
        self._send(200, b"", {"ETag": f'"{oid}"'})

    def _lfs_verify(self, repo_type: str, repo_id: str) -> None:
        self.hub._repo_meta(repo_type, repo_id, self._require_user(), write=True)
        payload = self._json_body()
        obj = self.hub._object_path(payload.get("oid", "0" * 64))
        if not obj.exists() or obj.stat().st_size != int(payload.get("size", -1)):
            raise HubError(404, f"LFS object {payload.get('oid')} not found", "EntryNotFound")
        self._send_json({"success": True})


class _Disconnect(Exception):
    """Close the connection without an answer (client went away, or an injected network failure)."""


# ---------------------------------------------------------------------------------------- helpers
def _clean_path(path: str) -> str:
    path = path.lstrip("/")
    if not path or any(part in ("", ".", "..") for part in path.split("/")) or path.startswith(".git/"):
        raise HubError(400, f"Invalid path in commit: {path!r}")
    return path


def _ref(name: str, kind: str, sha: str) -> dict[str, str]:
    return {"name": name, "ref": f"refs/{kind}/{name}", "targetCommit": sha}


def _all_dirs(files: dict[str, Any]) -> set[str]:
    dirs: set[str] = set()
    for path in files:
        parts = path.split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            dirs.add("/".join(parts[:depth]))
    return dirs


def _tree_id(files: dict[str, dict], directory: str) -> str:
    prefix = directory + "/"
    listing = "".join(f"{p}:{e['blob_id']}\n" for p, e in sorted(files.items()) if p.startswith(prefix))
    return hashlib.sha1(listing.encode()).hexdigest()


def _tree_file(path: str, entry: dict[str, Any]) -> dict[str, Any]:
    item: dict[str, Any] = {"type": "file", "oid": entry["blob_id"], "size": entry["size"], "path": path}
    if entry["lfs"]:
        item["lfs"] = {"oid": entry["sha256"], "size": entry["size"], "pointerSize": entry["pointer_size"]}
    return item


def _sibling(path: str, entry: dict[str, Any]) -> dict[str, Any]:
    item: dict[str, Any] = {"rfilename": path, "size": entry["size"], "blobId": entry["blob_id"]}
    if entry["lfs"]:
        item["lfs"] = {"size": entry["size"], "sha256": entry["sha256"], "pointerSize": entry["pointer_size"]}
    return item


def _card_metadata(hub: HubServer, commit: dict[str, Any]) -> dict[str, Any] | None:
    entry = commit["files"].get("README.md")
    if entry is None:
        return None
    import yaml

    text = hub._object_path(entry["sha256"]).read_text(encoding="utf-8", errors="replace")
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, flags=re.S)
    if match is None:
        return None
    try:
        data = yaml.safe_load(match.group(1))
    except yaml.YAMLError:
        return None
    return data if isinstance(data, dict) else None


def _config_summary(hub: HubServer, commit: dict[str, Any]) -> dict[str, Any] | None:
    entry = commit["files"].get("config.json")
    if entry is None:
        return None
    try:
        config = json.loads(hub._object_path(entry["sha256"]).read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return {key: config[key] for key in ("architectures", "model_type") if key in config}


# ---------------------------------------------------------------------------------------- client setup
def subprocess_env(
    server: HubServer,
    hf_home: str | os.PathLike,
    *,
    offline: bool = False,
    token: bool = True,
    base: dict[str, str] | None = None,
) -> dict[str, str]:
    """Environment for a fresh Python process that talks to `server` with its own HF_HOME.

    `huggingface_hub` reads `HF_ENDPOINT`, `HF_HOME` and `HF_HUB_OFFLINE` at import time, so a
    subprocess with these variables is the most faithful test of "HF_ENDPOINT is honoured".
    """
    env = dict(os.environ if base is None else base)
    for key in (
        "HF_HUB_CACHE",
        "HUGGINGFACE_HUB_CACHE",
        "HF_TOKEN_PATH",
        "HUGGING_FACE_HUB_TOKEN",
        "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "HF_XET_CACHE",
        "HF_ASSETS_CACHE",
        "XDG_CACHE_HOME",
    ):
        env.pop(key, None)
    env.update(
        {
            "HF_ENDPOINT": server.url,
            "HF_HOME": str(hf_home),
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            "HF_HUB_DISABLE_UPDATE_CHECK": "1",
            "HF_HUB_DISABLE_XET": "1" if server.lfs else "0",
            "HF_HUB_ETAG_TIMEOUT": "5",
            "HF_HUB_DOWNLOAD_TIMEOUT": "10",
            "TOKENIZERS_PARALLELISM": "false",
        }
    )
    if token:
        env["HF_TOKEN"] = server.token
    else:
        env.pop("HF_TOKEN", None)
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    return env


@contextlib.contextmanager
def hub_environment(
    server: HubServer, hf_home: str | os.PathLike, *, token: bool = True, offline: bool = False
) -> Iterator[None]:
    """Point the already-imported `huggingface_hub` / `transformers` of this process at `server`.

    `huggingface_hub` copies `HF_ENDPOINT` / `HF_HOME` into `huggingface_hub.constants` at import
    time and derives more values from them (the URL template, the trusted hosts, the global `HfApi`
    behind `huggingface_hub.upload_folder` & co, transformers' shared `HfApi`). Setting the
    environment variables after import changes nothing, so this patches all of those, and restores
    them on exit.
    """
    import huggingface_hub.constants as constants
    import huggingface_hub.hf_api as hf_api_module
    import huggingface_hub.utils._http as http_module
    from huggingface_hub.utils._http import _url_origin

    hf_home = Path(hf_home)
    hub_cache = str(hf_home / "hub")
    new_values: dict[tuple[Any, str], Any] = {
        (constants, "ENDPOINT"): server.url,
        (constants, "HUGGINGFACE_CO_URL_TEMPLATE"): server.url + "/{repo_id}/resolve/{revision}/{filename}",
        (constants, "HF_URL_HOSTS"): constants.HF_URL_HOSTS | {"127.0.0.1"},
        (constants, "HF_HOME"): str(hf_home),
        (constants, "HF_HUB_CACHE"): hub_cache,
        (constants, "HUGGINGFACE_HUB_CACHE"): hub_cache,
        (constants, "HF_ASSETS_CACHE"): str(hf_home / "assets"),
        (constants, "HF_XET_CACHE"): str(hf_home / "xet"),
        (constants, "HF_TOKEN_PATH"): str(hf_home / "token"),
        (constants, "HF_STORED_TOKENS_PATH"): str(hf_home / "stored_tokens"),
        (constants, "HF_HUB_OFFLINE"): offline,
        (constants, "HF_HUB_DISABLE_XET"): server.lfs,
        (constants, "HF_HUB_DISABLE_TELEMETRY"): True,
        (constants, "HF_HUB_ETAG_TIMEOUT"): 5,
        (constants, "HF_HUB_DOWNLOAD_TIMEOUT"): 10,
        (hf_api_module.api, "endpoint"): server.url,
        (http_module, "_HUB_ORIGINS"): http_module._HUB_ORIGINS | {_url_origin(server.url)},
    }
    with contextlib.suppress(ImportError):
        import transformers.utils.hub as transformers_hub

        new_values[(transformers_hub, "_hf_api")] = None  # rebuilt lazily with the patched endpoint
    env_updates = {
        "HF_ENDPOINT": server.url,
        "HF_HOME": str(hf_home),
        "HF_HUB_DISABLE_XET": "1" if server.lfs else "0",
        "HF_TOKEN": server.token if token else None,
        "HF_HUB_OFFLINE": "1" if offline else None,
        **dict.fromkeys(
            (
                "TRANSFORMERS_OFFLINE",
                "HF_HUB_CACHE",
                "HUGGINGFACE_HUB_CACHE",
                "HUGGING_FACE_HUB_TOKEN",
                "HF_TOKEN_PATH",
            )
        ),
    }
    saved_attrs = {key: getattr(*key) for key in new_values}
    saved_env = {key: os.environ.get(key) for key in env_updates}
    try:
        for (obj, name), value in new_values.items():
            setattr(obj, name, value)
        for key, value in env_updates.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        yield
    finally:
        for (obj, name), value in saved_attrs.items():
            setattr(obj, name, value)
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
