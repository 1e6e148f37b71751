"""`FakeHubServer`: an in-memory Hugging Face Hub for tests, on 127.0.0.1, that the REAL
`huggingface_hub` client (and transformers, peft) can upload to and download from.

It speaks what sclora's own Hub traffic needs, on model and dataset repos, through the client's
classic (non-Xet) code paths (``{models}`` is ``models`` or ``datasets``, ``{prefix}`` is empty or
``datasets/``, as on the Hub):

* ``POST /api/repos/create`` (``type`` model or dataset), ``POST /api/validate-yaml``
* ``GET /api/{models}/{repo}`` and ``.../revision/{rev}`` (``sha``, ``siblings``)
* ``GET /api/{models}/{repo}/tree/{rev}[/{path}]`` (``recursive``)
* ``POST /api/{models}/{repo}/branch/{branch}``
* ``POST /api/{models}/{repo}/preupload/{rev}`` (regular vs lfs, remote ``oid``)
* ``POST /{prefix}{repo}.git/info/lfs/objects/batch`` (basic uploads pointing back here), ``.../verify``, the PUT
* ``POST /api/{models}/{repo}/commit/{rev}`` (NDJSON: header / file / lfsFile / deletedFile), atomic,
  ``parentCommit`` check (412)
* ``GET|HEAD /{prefix}{repo}/resolve/{rev}/{path}`` with ETag, X-Repo-Commit, X-Linked-Etag / X-Linked-Size for
  LFS files, and the ``X-Error-Code`` headers the client maps to its exceptions

The test helpers name a repo by its key: ``ORG/NAME`` for a model, ``datasets/ORG/NAME`` for a dataset.

Every request is recorded (method, path, headers, body) so tests can check which token was sent and
that it never leaked into uploaded bytes; `fail_next_commit` makes the next commit fail with a 500, and
`inject` makes chosen requests fail with any status, or stall (a server that does not answer).
A route it does not know is a 404 recorded in `unhandled`; a bug in the double is a 500 recorded
in `internal_errors` (the fixture fails the test on those).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote

from .reads import ReadEndpoints
from .storage import (
    DEFAULT_GITATTRIBUTES,
    LFS_SIZE_THRESHOLD,
    Blob,
    Commit,
    HttpError,
    Repo,
    RequestRecord,
    lfs_patterns,
    matches_any,
    now_iso,
    repo_key,
    split_key,
    validate_path,
)
from .transport import Handler, Response, Server
from .writes import WriteEndpoints


@dataclass
class Injection:
    """What `FakeHubServer.inject` does to the requests it matches."""

    pattern: re.Pattern
    status: int | None
    stall: float
    times: int
    message: str
    headers: dict


class FakeHubServer(ReadEndpoints, WriteEndpoints):
    """Start it, point `HF_ENDPOINT` at `.url`, use the real client against it.

    `token` is the only token accepted (``Authorization: Bearer <token>``; ``None`` accepts any bearer
    token); `user` is the namespace of repos created without one and the commit author.
    """

    def __init__(self, *, token: str | None = None, user: str = "fake-user") -> None:
        self.token = token
        self.user = user
        self._lock = threading.RLock()
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        self._counter = 0
        self.repos: dict[str, Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.requests: list[RequestRecord] = []
        self.decoded_commit_contents: list[bytes] = []  # base64 file payloads of commits, decoded
        self.unhandled: list[str] = []  # "METHOD /path" the double does not implement
        self.internal_errors: list[str] = []  # tracebacks of bugs in the double
        self.fail_next_commit: int | bool = 0
        self.injections: list[Injection] = []

    # -- lifecycle ---------------------------------------------------------------------------------------------------

    def start(self) -> FakeHubServer:
        if self._server is None:
            self._server = Server(("127.0.0.1", 0), Handler)
            self._server.hub = self  # type: ignore[attr-defined]
            self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
            self._thread.name = f"FakeHubServer:{self.port}"
            self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeHubServer is not started")
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        """The value for HF_ENDPOINT, e.g. ``http://127.0.0.1:54321``."""
        return f"http://127.0.0.1:{self.port}"

    # -- test helpers: state -----------------------------------------------------------------------------------------

    def create_repo(self, repo_id: str, *, private: bool = False, files: dict[str, bytes] | None = None) -> Repo:
        """Create a repo directly (no HTTP), optionally with a second commit holding `files`.
        `repo_id` is the key: `datasets/ORG/NAME` makes a dataset repo."""
        with self._lock:
            if repo_id in self.repos:
                raise ValueError(f"repo {repo_id} already exists")
            repo = self.new_repo(repo_id, private)
            if files:
                head = repo.commits[repo.branches["main"]]
                new_files = dict(head.files)
                for path, data in files.items():
                    new_files[validate_path(path)] = self.make_blob(path, data, new_files)
                self.add_commit(repo, "main", head.oid, new_files, "Upload files", "")
            return repo

    def has_repo(self, repo_id: str) -> bool:
        return repo_id in self.repos

    def repo(self, repo_id: str) -> Repo:
        try:
            return self.repos[repo_id]
        except KeyError:
            raise KeyError(f"No repo {repo_id!r} on the fake hub") from None

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """{path: content} of the repo at `revision` (branch or commit oid)."""
        return self.commit(repo_id, revision).contents()

    def file_entries(self, repo_id: str, revision: str = "main") -> dict[str, Blob]:
        """{path: Blob} (with `.lfs`, `.sha256`, `.git_oid`) of the repo at `revision`."""
        return dict(self.commit(repo_id, revision).files)

    def commit(self, repo_id: str, revision: str = "main") -> Commit:
        with self._lock:
            repo = self.repo(repo_id)
            oid = repo.resolve(revision)
            if oid is None:
                raise KeyError(f"Unknown revision {revision!r} in {repo_id}")
            return repo.commits[oid]

    def commits(self, repo_id: str) -> list[Commit]:
        """Every commit of the repo (all branches), oldest first; the first one is the initial commit."""
        with self._lock:
            repo = self.repo(repo_id)
            return [repo.commits[oid] for oid in repo.order]

    def head(self, repo_id: str, revision: str = "main") -> str:
        return self.commit(repo_id, revision).oid

    def branches(self, repo_id: str) -> dict[str, str]:
        return dict(self.repo(repo_id).branches)

    def inject(self, pattern: str, status: int | None = None, *, stall: float = 0.0, times: int = 1,
               message: str = "injected failure", headers: dict | None = None) -> None:
        """The next `times` requests whose "METHOD /path" matches the regex `pattern` wait `stall` seconds
        (outside the lock: other requests go on), then answer `status` with `message` (None: answer normally)."""
        with self._lock:
            self.injections.append(Injection(re.compile(pattern), status, stall, times, message, headers or {}))

    def injection_for(self, record: RequestRecord) -> Injection | None:
        with self._lock:
            for injection in self.injections:
                if injection.times > 0 and injection.pattern.search(f"{record.method} {record.path}"):
                    injection.times -= 1
                    return injection
        return None

    # -- test helpers: traffic ---------------------------------------------------------------------------------------

    def auth_headers(self) -> list[str | None]:
        """The Authorization header value of every request received, in order (None when absent)."""
        with self._lock:
            return [r.authorization for r in self.requests]

    def all_uploaded_bytes(self) -> bytes:
        """Every request body received, concatenated, plus the decoded content of base64 file lines of commits."""
        with self._lock:
            return b"\n".join([r.body for r in self.requests] + self.decoded_commit_contents)

    def find_leaks(self, secret: str) -> list[str]:
        """Where `secret` shows up in what the client sent, apart from the Authorization header."""
        needle = secret.encode()
        found = []
        with self._lock:
            for r in self.requests:
                where = f"{r.method} {r.path}"
                if needle in r.body:
                    found.append(f"body of {where}")
                if any(secret in text for text in (r.path, unquote(r.path), r.query, unquote(r.query))):
                    found.append(f"url of {where}")
                found += [f"header {name} of {where}" for name, value in r.headers.items() if name != "authorization" and secret in value]
            found += ["content of a committed file" for content in self.decoded_commit_contents if needle in content]
        return found

    def requests_to(self, pattern: str, method: str | None = None) -> list[RequestRecord]:
        """Recorded requests whose raw path matches the regex `pattern` (re.search)."""
        regex = re.compile(pattern)
        with self._lock:
            return [r for r in self.requests if regex.search(r.path) and (method is None or r.method == method)]

    # -- state changes -----------------------------------------------------------------------------------------------

    def record(self, record: RequestRecord) -> None:
        with self._lock:
            self.requests.append(record)

    def new_oid(self, *parts: Any) -> str:
        self._counter += 1
        return hashlib.sha1(json.dumps([self._counter, now_iso(), *parts], default=str).encode()).hexdigest()

    def new_repo(self, key: str, private: bool) -> Repo:
        repo_type, repo_id = split_key(key)
        repo = Repo(repo_id=repo_id, private=private, created_at=now_iso(), repo_type=repo_type)
        repo.uid = self.new_oid("repo", key)[:24]
        self.add_commit(repo, "main", None, {".gitattributes": Blob.regular(DEFAULT_GITATTRIBUTES.encode())}, "initial commit", "")
        self.repos[key] = repo
        return repo

    def add_commit(self, repo: Repo, branch: str, parent: str | None, files: dict[str, Blob], title: str, message: str) -> Commit:
        oid = self.new_oid(parent, sorted((path, blob.git_oid) for path, blob in files.items()), title, message)
        commit = Commit(oid=oid, parents=[parent] if parent else [], title=title, message=message, author=self.user,
                        date=now_iso(), files=files)
        repo.commits[oid] = commit
        repo.order.append(oid)
        repo.branches[branch] = oid
        return commit

    def upload_mode(self, path: str, size: int, sample: bytes, files: dict[str, Blob]) -> str:
        binary = b"\x00" in sample
        return "lfs" if size > LFS_SIZE_THRESHOLD or binary or matches_any(path, lfs_patterns(files)) else "regular"

    def make_blob(self, path: str, data: bytes, files: dict[str, Blob]) -> Blob:
        if data and self.upload_mode(path, len(data), data[:512], files) == "lfs":
            self.lfs_objects[hashlib.sha256(data).hexdigest()] = data
            return Blob.large(data)
        return Blob.regular(data)

    # -- auth and lookups --------------------------------------------------------------------------------------------

    def auth_user(self, record: RequestRecord) -> str | None:
        header = record.authorization
        if not header:
            return None
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip() or (self.token is not None and value.strip() != self.token):
            raise HttpError(401, "Invalid credentials in Authorization header")
        return self.user

    def require_user(self, record: RequestRecord) -> str:
        user = self.auth_user(record)
        if user is None:
            raise HttpError(401, "You must be authenticated to access this resource")
        return user

    def get_repo(self, repo_id: str, record: RequestRecord, write: bool = False) -> Repo:
        repo = self.repos.get(repo_id)
        user = self.require_user(record) if write else self.auth_user(record)
        if repo is None:
            raise HttpError(404, "Repository not found", "RepoNotFound")
        if repo.private and user is None:
            raise HttpError(401, "Repository not found", "RepoNotFound")
        return repo

    def resolve(self, repo: Repo, revision: str) -> Commit:
        oid = repo.resolve(revision)
        if oid is None:
            raise HttpError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return repo.commits[oid]

    def repo_url(self, repo: Repo) -> str:
        return f"{self.url}/{repo.key}"

    # -- dispatch ----------------------------------------------------------------------------------------------------

    def handle(self, record: RequestRecord) -> Response:
        injection = self.injection_for(record)
        if injection is not None:
            time.sleep(injection.stall)
            if injection.status is not None:
                raise HttpError(injection.status, injection.message, headers=injection.headers)
        with self._lock:
            segs = [s for s in record.path.split("/") if s != ""]
            query = parse_qs(record.query, keep_blank_values=True)
            response = None
            if segs[:1] == ["api"]:
                response = self.route_api(record.method, segs[1:], query, record)
            elif segs[:2] == ["__fakehub__", "lfs"] and len(segs) == 3 and record.method == "PUT":
                response = self.lfs_put(segs[2], record.body)
            elif len(segs) >= 3:
                response = self.route_repo(record.method, segs, record)
            if response is None:
                self.unhandled.append(f"{record.method} {record.path}")
                raise HttpError(404, f"FakeHub: no route for {record.method} {record.path}")
            return response

    def route_api(self, method: str, segs: list[str], query: dict, record: RequestRecord) -> Response | None:
        if segs == ["validate-yaml"] and method == "POST":
            return self.validate_yaml(record)
        if segs == ["repos", "create"] and method == "POST":
            return self.create_repo_endpoint(record)
        if len(segs) < 3 or segs[0] not in ("models", "datasets"):
            return None
        repo_id = repo_key(segs[0].removesuffix("s"), f"{unquote(segs[1])}/{unquote(segs[2])}")  # models -> model
        action, args = segs[3] if len(segs) > 3 else None, [unquote(s) for s in segs[4:]]
        routes = {
            (None, "GET"): lambda: self.repo_info(repo_id, None, record),
            ("revision", "GET"): lambda: self.repo_info(repo_id, "/".join(args), record),
            ("tree", "GET"): lambda: self.tree(repo_id, args[0], "/".join(args[1:]), query, record),
            ("branch", "POST"): lambda: self.create_branch(repo_id, "/".join(args), record),
            ("preupload", "POST"): lambda: self.preupload(repo_id, "/".join(args), record),
            ("commit", "POST"): lambda: self.commit_endpoint(repo_id, "/".join(args), record),
        }
        route = routes.get((action, method))
        return route() if route is not None and (action is None or args) else None

    def route_repo(self, method: str, segs: list[str], record: RequestRecord) -> Response | None:
        prefix = ""
        if segs[0] == "datasets":
            prefix, segs = "datasets/", segs[1:]
            if len(segs) < 3:
                return None
        namespace, name = prefix + unquote(segs[0]), unquote(segs[1])
        if name.endswith(".git") and segs[2:5] == ["info", "lfs", "objects"] and len(segs) == 6 and method == "POST":
            repo_id = f"{namespace}/{name.removesuffix('.git')}"
            if segs[5] == "batch":
                return self.lfs_batch(repo_id, record)
            if segs[5] == "verify":
                return self.lfs_verify(repo_id, record)
            return None
        if segs[2] == "resolve" and len(segs) >= 5 and method in ("GET", "HEAD"):
            return self.resolve_file(f"{namespace}/{name}", unquote(segs[3]), "/".join(unquote(s) for s in segs[4:]), record)
        return None
