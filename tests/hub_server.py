"""A Hugging Face Hub-compatible HTTP test double, for tests only.

`FakeHubServer` is a small threaded HTTP server (stdlib only) that speaks enough of the Hub protocol for
`huggingface_hub`'s classic (non-Xet) code paths, so the REAL client can upload to it and download from it:

* ``POST /api/repos/create``, ``DELETE /api/repos/delete``, ``POST /api/repos/move``,
  ``PUT /api/{type}s/{repo}/settings``
* ``GET /api/{type}s/{repo}`` and ``.../revision/{rev}`` (model/dataset/space info with ``sha`` and ``siblings``;
  sizes, ``blobId`` and ``lfs`` when ``?blobs=true`` like the real Hub; ``expand`` filters keys)
* ``GET /api/{type}s/{repo}/tree/{rev}[/{path}]`` (``recursive``, ``expand``, Link-header pagination) and
  ``POST /api/{type}s/{repo}/paths-info/{rev}``
* ``POST /api/{type}s/{repo}/preupload/{rev}`` (regular vs lfs, ``shouldIgnore``, remote ``oid``)
* ``POST /{repo}.git/info/lfs/objects/batch`` (upload actions pointing back at this server, basic or
  multipart), ``POST /{repo}.git/info/lfs/objects/verify``, and the upload targets themselves
* ``POST /api/{type}s/{repo}/commit/{rev}`` (NDJSON: header / file / lfsFile / deletedFile / deletedFolder),
  atomic, ``parentCommit`` check (412), ``?create_pr=1``
* ``POST|DELETE /api/{type}s/{repo}/branch/{branch}``, ``POST|DELETE .../tag/{tag}``, ``GET .../refs``,
  ``GET .../commits/{rev}``
* ``GET|HEAD /{repo}/resolve/{rev}/{path}`` with ETag, X-Repo-Commit, Content-Length, X-Linked-Etag /
  X-Linked-Size for LFS files, Range, and the ``X-Error-Code`` headers the client maps to its exceptions
  (``RepoNotFound``, ``RevisionNotFound``, ``EntryNotFound``). Optionally LFS files are served through a 302 to
  a "CDN" on a different origin (``http://localhost:PORT``), like the real Hub does.
* ``GET /api/whoami-v2``, ``GET /api/agent-harnesses``, ``POST /api/validate-yaml``

Everything is kept in memory. Every request is recorded (method, path, headers, body) so that tests can
check which token was sent and that it never leaked into uploaded bytes. Failures can be injected
(``fail_next_commit``, ``fail_request(...)``).

The server only ever binds to 127.0.0.1 and never opens outgoing connections.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import re
import threading
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Iterable
from urllib.parse import parse_qs, quote, unquote, urlencode, urlsplit

__all__ = ["FakeHubServer", "Blob", "Commit", "RequestRecord", "DEFAULT_GITATTRIBUTES"]

# Same content as the `.gitattributes` the real Hub puts in the initial commit of a new model repo.
DEFAULT_GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in (
        "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gz", "*.h5", "*.joblib", "*.lfs.*",
        "*.mlmodel", "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot", "*.parquet", "*.pb",
        "*.pickle", "*.pkl", "*.pt", "*.pth", "*.rar", "*.safetensors", "saved_model/**/*", "*.tar.*",
        "*.tar", "*.tflite", "*.tgz", "*.wasm", "*.xz", "*.zip", "*.zst", "*tfevents*",
    )
)

_TYPE_BY_PLURAL = {"models": "model", "datasets": "dataset", "spaces": "space", "kernels": "kernel"}
_URL_PREFIX_BY_TYPE = {"model": "", "dataset": "datasets/", "space": "spaces/", "kernel": "kernels/"}
_MAX_REGULAR_FILE_SIZE = 10 * 1024 * 1024  # the real Hub rejects non-LFS files above 10 MiB
_PR_REF = re.compile(r"^refs/pr/(\d+)$")
_RANGE = re.compile(r"^\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*$", re.IGNORECASE)


# --------------------------------------------------------------------------------------------------------------------
# Storage model
# --------------------------------------------------------------------------------------------------------------------


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob holding `data` (what the Hub reports as the `oid` of regular files)."""
    return hashlib.sha1(b"blob " + str(len(data)).encode() + b"\0" + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _now_iso() -> str:
    now = datetime.now(timezone.utc)
    return now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class Blob:
    """One file version. `lfs` tells whether it is stored as an LFS object (pointer in git)."""

    data: bytes
    lfs: bool
    sha256: str
    git_oid: str  # regular: git blob sha1 of the content; lfs: git blob sha1 of the pointer file
    pointer_size: int | None = None

    @classmethod
    def regular(cls, data: bytes) -> "Blob":
        return cls(data=data, lfs=False, sha256=hashlib.sha256(data).hexdigest(), git_oid=git_blob_sha1(data))

    @classmethod
    def large(cls, data: bytes) -> "Blob":
        sha = hashlib.sha256(data).hexdigest()
        pointer = lfs_pointer(sha, len(data))
        return cls(data=data, lfs=True, sha256=sha, git_oid=git_blob_sha1(pointer), pointer_size=len(pointer))

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def etag(self) -> str:
        """What the Hub sends as ETag on /resolve: sha256 for LFS files, the git oid otherwise."""
        return self.sha256 if self.lfs else self.git_oid


@dataclass
class Commit:
    oid: str
    parents: list[str]
    title: str
    message: str
    author: str
    date: str
    files: dict[str, Blob]  # full snapshot of the tree at this commit

    def contents(self) -> dict[str, bytes]:
        return {path: blob.data for path, blob in self.files.items()}


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool
    created_at: str
    commits: dict[str, Commit] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)  # commit oids, oldest first
    branches: dict[str, str] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)
    prs: dict[int, str] = field(default_factory=dict)
    uid: str = ""

    def resolve(self, revision: str) -> str | None:
        if revision in self.branches:
            return self.branches[revision]
        if revision in self.tags:
            return self.tags[revision]
        if revision.startswith("refs/heads/") and revision[len("refs/heads/"):] in self.branches:
            return self.branches[revision[len("refs/heads/"):]]
        if revision.startswith("refs/tags/") and revision[len("refs/tags/"):] in self.tags:
            return self.tags[revision[len("refs/tags/"):]]
        m = _PR_REF.match(revision)
        if m:
            return self.prs.get(int(m.group(1)))
        if re.fullmatch(r"[0-9a-f]{7,40}", revision):
            matches = [oid for oid in self.commits if oid.startswith(revision)]
            if len(matches) == 1:
                return matches[0]
        return None

    def ancestors(self, oid: str) -> list[Commit]:
        """First-parent history starting at `oid`, newest first."""
        out = []
        cur: str | None = oid
        while cur is not None:
            commit = self.commits[cur]
            out.append(commit)
            cur = commit.parents[0] if commit.parents else None
        return out


@dataclass
class RequestRecord:
    method: str
    path: str  # raw path, percent-encoded, without the query string
    query: str
    headers: dict[str, str]  # lower-cased names
    body: bytes
    host: str = ""
    status: int | None = None

    @property
    def authorization(self) -> str | None:
        return self.headers.get("authorization")


class _HttpError(Exception):
    def __init__(self, status: int, message: str, error_code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_code = error_code
        self.headers = headers or {}


@dataclass
class _Response:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _FailureRule:
    method: str | None
    pattern: re.Pattern
    status: int
    times: int
    message: str
    error_code: str | None


def _json(obj: Any, status: int = 200, headers: dict | None = None, content_type="application/json") -> _Response:
    return _Response(status, json.dumps(obj).encode(), {"Content-Type": content_type, **(headers or {})})


def _truthy(values: list[str] | None) -> bool:
    return bool(values) and values[-1].lower() in ("1", "true", "yes", "on")


def _parse_gitattributes_lfs(text: str) -> list[str]:
    patterns = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if any(p == "filter=lfs" for p in parts[1:]):
            patterns.append(parts[0])
    return patterns


def _matches_any(path: str, patterns: Iterable[str]) -> bool:
    name = path.rsplit("/", 1)[-1]
    for pattern in patterns:
        pat = pattern.rstrip("/")
        if pat.startswith("/"):
            pat = pat[1:]
            if fnmatch.fnmatchcase(path, pat) or fnmatch.fnmatchcase(path, pat + "/*"):
                return True
            continue
        if "/" in pat:
            if fnmatch.fnmatchcase(path, pat) or fnmatch.fnmatchcase(path, pat + "/*"):
                return True
        elif fnmatch.fnmatchcase(name, pat) or any(fnmatch.fnmatchcase(seg, pat) for seg in path.split("/")[:-1]):
            return True
    return False


def _validate_path(path: str) -> str:
    if not isinstance(path, str) or not path or path.startswith("/") or path.endswith("/"):
        raise _HttpError(400, f"Invalid path: {path!r}")
    segments = path.split("/")
    if any(seg in ("", ".", "..") for seg in segments) or segments[0] == ".git":
        raise _HttpError(400, f"Invalid path: {path!r}")
    return path


# --------------------------------------------------------------------------------------------------------------------
# HTTP plumbing
# --------------------------------------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeHub/1.0"
    timeout = 60  # idle keep-alive connections are dropped after that

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - silence stderr logging
        pass

    def do_GET(self):  # noqa: N802
        self._dispatch("GET")

    def do_HEAD(self):  # noqa: N802
        self._dispatch("HEAD")

    def do_POST(self):  # noqa: N802
        self._dispatch("POST")

    def do_PUT(self):  # noqa: N802
        self._dispatch("PUT")

    def do_DELETE(self):  # noqa: N802
        self._dispatch("DELETE")

    def do_PATCH(self):  # noqa: N802
        self._dispatch("PATCH")

    def _read_body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            chunks = []
            while True:
                size_line = self.rfile.readline()
                if not size_line:
                    break
                size = int(size_line.split(b";", 1)[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()  # CRLF after each chunk
            return b"".join(chunks)
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def _dispatch(self, method: str) -> None:
        hub: FakeHubServer = self.server.hub  # type: ignore[attr-defined]
        body = self._read_body()
        split = urlsplit(self.path)
        record = RequestRecord(
            method=method,
            path=split.path,
            query=split.query,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
            host=self.headers.get("Host", ""),
        )
        hub._record(record)
        try:
            response = hub._handle(record)
        except _HttpError as err:
            headers = {"X-Error-Message": err.message, **err.headers}
            if err.error_code:
                headers["X-Error-Code"] = err.error_code
            response = _json({"error": err.message}, status=err.status, headers=headers)
        except Exception:  # a bug in the test double: report it loudly
            tb = traceback.format_exc()
            hub.internal_errors.append(f"{method} {self.path}\n{tb}")
            response = _json({"error": "FakeHub internal error", "traceback": tb}, status=500)
        record.status = response.status
        self._send(response, head=(method == "HEAD"))

    def _send(self, response: _Response, head: bool) -> None:
        self.send_response(response.status)
        headers = dict(response.headers)
        if "Content-Length" not in headers:
            headers["Content-Length"] = str(len(response.body))
        for key, value in headers.items():
            # http.server writes headers as latin-1: keep them ASCII (paths may be unicode)
            self.send_header(key, str(value).encode("ascii", "backslashreplace").decode("ascii"))
        self.end_headers()
        if not head and response.body:
            self.wfile.write(response.body)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64


# --------------------------------------------------------------------------------------------------------------------
# The fake Hub
# --------------------------------------------------------------------------------------------------------------------


class FakeHubServer:
    """In-memory Hub test double. Start it, point `HF_ENDPOINT` at `.url`, use the real client against it.

    Args:
        token: the only token accepted (``Authorization: Bearer <token>``). ``None`` accepts any bearer token.
        user: the user name the token belongs to (used as default namespace and commit author).
        orgs: organisations reported by whoami.
        require_auth_for_write: reject writes sent without a token (401), like the real Hub.
        initial_gitattributes: like the real Hub, new repos start with an "initial commit" holding the default
            ``.gitattributes``. With ``False`` the initial commit is empty.
        lfs_size_threshold: files strictly larger than this are stored as LFS (binary files and files matching
            the repo's ``.gitattributes`` LFS patterns are LFS whatever their size).
        multipart_chunk_size: if set, LFS uploads larger than this use the multipart protocol.
        lfs_cdn_redirect: if True, ``/resolve`` answers LFS files with a 302 to a "CDN" URL on another origin
            (``http://localhost:PORT/__fakehub__/cdn/...``), carrying X-Linked-* headers, like the real Hub.
        tree_page_size: entries per page of the tree listing (Link-header pagination, as on the Hub).
    """

    def __init__(
        self,
        *,
        token: str | None = None,
        user: str = "fake-user",
        orgs: Iterable[str] = ("fake-org",),
        require_auth_for_write: bool = True,
        initial_gitattributes: bool = True,
        lfs_size_threshold: int = 10 * 1024 * 1024,
        multipart_chunk_size: int | None = None,
        lfs_cdn_redirect: bool = False,
        tree_page_size: int = 1000,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("FakeHubServer only binds to loopback")
        self.token = token
        self.user = user
        self.orgs = list(orgs)
        self.require_auth_for_write = require_auth_for_write
        self.initial_gitattributes = initial_gitattributes
        self.lfs_size_threshold = lfs_size_threshold
        self.multipart_chunk_size = multipart_chunk_size
        self.lfs_cdn_redirect = lfs_cdn_redirect
        self.tree_page_size = tree_page_size
        self._host = host
        self._port = port
        self._lock = threading.RLock()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._counter = 0
        self.reset()

    # -- lifecycle ---------------------------------------------------------------------------------------------------

    def start(self) -> "FakeHubServer":
        if self._server is not None:
            return self
        server = _Server((self._host, self._port), _Handler)
        server.hub = self  # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
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

    def __enter__(self) -> "FakeHubServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeHubServer is not started")
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        """The value for HF_ENDPOINT, e.g. ``http://127.0.0.1:54321``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def cdn_url(self) -> str:
        """A different origin served by the same server (used for LFS downloads when `lfs_cdn_redirect`)."""
        return f"http://localhost:{self.port}"

    def reset(self) -> None:
        """Forget every repo, LFS object, request and injected failure."""
        with self._lock:
            self.repos: dict[tuple[str, str], Repo] = {}
            self.lfs_objects: dict[str, bytes] = {}
            self._lfs_parts: dict[str, dict[int, bytes]] = {}
            self.requests: list[RequestRecord] = []
            self.decoded_commit_contents: list[bytes] = []  # base64 file payloads of commits, decoded
            self.unhandled: list[str] = []  # "METHOD /path" the double does not implement
            self.internal_errors: list[str] = []  # tracebacks of bugs in the double
            self.fail_next_commit: int | bool = 0
            self._failure_rules: list[_FailureRule] = []

    # -- test helpers: state -----------------------------------------------------------------------------------------

    def create_repo(
        self,
        repo_id: str,
        *,
        repo_type: str = "model",
        private: bool = False,
        files: dict[str, bytes] | None = None,
        exist_ok: bool = False,
    ) -> Repo:
        """Create a repo directly (no HTTP), optionally with a second commit holding `files`."""
        with self._lock:
            key = (repo_type, repo_id)
            if key in self.repos:
                if not exist_ok:
                    raise ValueError(f"{repo_type} repo {repo_id} already exists")
                repo = self.repos[key]
            else:
                repo = self._new_repo(repo_type, repo_id, private)
            if files:
                head = repo.commits[repo.branches["main"]]
                new_files = dict(head.files)
                for path, data in files.items():
                    new_files[_validate_path(path)] = self._make_blob(path, data, new_files)
                self._add_commit(repo, "main", head.oid, new_files, "Upload files", "")
            return repo

    def has_repo(self, repo_id: str, repo_type: str = "model") -> bool:
        return (repo_type, repo_id) in self.repos

    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        try:
            return self.repos[(repo_type, repo_id)]
        except KeyError:
            raise KeyError(f"No {repo_type} repo {repo_id!r} on the fake hub") from None

    def files(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, bytes]:
        """{path: content} of the repo at `revision` (branch, tag, refs/pr/N or commit oid)."""
        return self.commit(repo_id, revision, repo_type).contents()

    def file_entries(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> dict[str, Blob]:
        """{path: Blob} (with `.lfs`, `.sha256`, `.git_oid`) of the repo at `revision`."""
        return dict(self.commit(repo_id, revision, repo_type).files)

    def commit(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> Commit:
        with self._lock:
            repo = self.repo(repo_id, repo_type)
            oid = repo.resolve(revision)
            if oid is None:
                raise KeyError(f"Unknown revision {revision!r} in {repo_id}")
            return repo.commits[oid]

    def commits(self, repo_id: str, repo_type: str = "model") -> list[Commit]:
        """Every commit of the repo (all branches and PRs), oldest first; the first one is the initial commit."""
        with self._lock:
            repo = self.repo(repo_id, repo_type)
            return [repo.commits[oid] for oid in repo.order]

    def head(self, repo_id: str, revision: str = "main", repo_type: str = "model") -> str:
        return self.commit(repo_id, revision, repo_type).oid

    def branches(self, repo_id: str, repo_type: str = "model") -> dict[str, str]:
        return dict(self.repo(repo_id, repo_type).branches)

    # -- test helpers: traffic ---------------------------------------------------------------------------------------

    def auth_headers(self) -> list[str | None]:
        """The Authorization header value of every request received, in order (None when absent)."""
        with self._lock:
            return [r.authorization for r in self.requests]

    def all_uploaded_bytes(self) -> bytes:
        """Every request body received, concatenated, plus the decoded content of base64 file lines of commits.

        Use it for leak checks: ``assert token.encode() not in hub.all_uploaded_bytes()``.
        """
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
                if secret in r.path or secret in unquote(r.path) or secret in r.query or secret in unquote(r.query):
                    found.append(f"url of {where}")
                for name, value in r.headers.items():
                    if name != "authorization" and secret in value:
                        found.append(f"header {name} of {where}")
            for content in self.decoded_commit_contents:
                if needle in content:
                    found.append("content of a committed file")
        return found

    def requests_to(self, pattern: str, method: str | None = None) -> list[RequestRecord]:
        """Recorded requests whose raw path matches the regex `pattern` (re.search)."""
        regex = re.compile(pattern)
        with self._lock:
            return [r for r in self.requests if regex.search(r.path) and (method is None or r.method == method)]

    # -- test helpers: failure injection -----------------------------------------------------------------------------

    def fail_request(
        self,
        path_pattern: str,
        *,
        method: str | None = None,
        status: int = 500,
        times: int = 1,
        message: str = "Injected failure",
        error_code: str | None = None,
    ) -> None:
        """Make the next `times` requests whose raw path matches `path_pattern` (re.search) fail with `status`.

        The request is recorded but has no effect. Beware: the client retries 408/429/5xx with backoff (1s, 2s, 4s,
        ...) on preupload, LFS batch and LFS upload calls; the commit call itself is not retried.
        """
        with self._lock:
            self._failure_rules.append(
                _FailureRule(method, re.compile(path_pattern), status, times, message, error_code)
            )

    # -- internals: state changes ------------------------------------------------------------------------------------

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self.requests.append(record)

    def _new_oid(self, *parts: Any) -> str:
        self._counter += 1
        payload = json.dumps([self._counter, _now_iso(), *parts], default=str).encode()
        return hashlib.sha1(payload).hexdigest()

    def _new_repo(self, repo_type: str, repo_id: str, private: bool) -> Repo:
        repo = Repo(repo_type=repo_type, repo_id=repo_id, private=private, created_at=_now_iso())
        repo.uid = self._new_oid("repo", repo_type, repo_id)[:24]
        files = {".gitattributes": Blob.regular(DEFAULT_GITATTRIBUTES.encode())} if self.initial_gitattributes else {}
        self._add_commit(repo, "main", None, files, "initial commit", "")
        self.repos[(repo_type, repo_id)] = repo
        return repo

    def _add_commit(
        self, repo: Repo, ref: str | None, parent: str | None, files: dict[str, Blob], title: str, message: str
    ) -> Commit:
        tree = sorted((path, blob.git_oid) for path, blob in files.items())
        oid = self._new_oid(parent, tree, title, message)
        commit = Commit(
            oid=oid,
            parents=[parent] if parent else [],
            title=title,
            message=message,
            author=self.user,
            date=_now_iso(),
            files=files,
        )
        repo.commits[oid] = commit
        repo.order.append(oid)
        if ref is not None:
            m = _PR_REF.match(ref)
            if m:
                repo.prs[int(m.group(1))] = oid
            else:
                repo.branches[ref] = oid
        return commit

    def _lfs_patterns(self, files: dict[str, Blob]) -> list[str]:
        attributes = files.get(".gitattributes")
        return _parse_gitattributes_lfs(attributes.data.decode("utf-8", "replace")) if attributes else []

    def _upload_mode(self, path: str, size: int, sample: bytes, files: dict[str, Blob]) -> str:
        if size > self.lfs_size_threshold:
            return "lfs"
        if _matches_any(path, self._lfs_patterns(files)):
            return "lfs"
        if b"\x00" in sample:  # binary content
            return "lfs"
        return "regular"

    def _make_blob(self, path: str, data: bytes, files: dict[str, Blob]) -> Blob:
        if data and self._upload_mode(path, len(data), data[:512], files) == "lfs":
            self.lfs_objects[hashlib.sha256(data).hexdigest()] = data
            return Blob.large(data)
        return Blob.regular(data)

    # -- internals: auth and lookups ---------------------------------------------------------------------------------

    def _auth_user(self, record: RequestRecord) -> str | None:
        header = record.authorization
        if not header:
            return None
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise _HttpError(401, "Invalid credentials in Authorization header")
        if self.token is not None and value.strip() != self.token:
            raise _HttpError(401, "Invalid credentials in Authorization header")
        return self.user

    def _require_user(self, record: RequestRecord) -> str:
        user = self._auth_user(record)
        if user is None:
            if self.require_auth_for_write:
                raise _HttpError(401, "You must be authenticated to access this resource")
            return self.user
        return user

    def _get_repo(self, repo_type: str, repo_id: str, record: RequestRecord, write: bool = False) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        user = self._require_user(record) if write else self._auth_user(record)
        if repo is None:
            raise _HttpError(404, "Repository not found", "RepoNotFound")
        if repo.private and user is None:
            raise _HttpError(401, "Repository not found", "RepoNotFound")
        return repo

    def _resolve(self, repo: Repo, revision: str) -> Commit:
        oid = repo.resolve(revision)
        if oid is None:
            raise _HttpError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return repo.commits[oid]

    def _repo_url(self, repo: Repo) -> str:
        return f"{self.url}/{_URL_PREFIX_BY_TYPE[repo.repo_type]}{repo.repo_id}"

    # -- dispatch ----------------------------------------------------------------------------------------------------

    def _handle(self, record: RequestRecord) -> _Response:
        with self._lock:
            for rule in self._failure_rules:
                if rule.times > 0 and (rule.method in (None, record.method)) and rule.pattern.search(record.path):
                    rule.times -= 1
                    raise _HttpError(rule.status, rule.message, rule.error_code)
            segs = [s for s in record.path.split("/") if s != ""]
            query = parse_qs(record.query, keep_blank_values=True)
            method = record.method
            response: _Response | None = None
            if segs and segs[0] == "api":
                response = self._handle_api(method, segs[1:], query, record)
            elif segs and segs[0] == "__fakehub__":
                response = self._handle_internal(method, segs[1:], query, record)
            elif segs:
                response = self._handle_repo_routes(method, segs, query, record)
            if response is None:
                self.unhandled.append(f"{method} {record.path}")
                raise _HttpError(404, f"FakeHub: no route for {method} {record.path}")
            return response

    def _handle_api(self, method: str, segs: list[str], query: dict, record: RequestRecord) -> _Response | None:
        if segs == ["whoami-v2"] and method == "GET":
            return self._whoami(record)
        if segs == ["agent-harnesses"] and method == "GET":
            return _json({"standardEnvVars": [], "harnesses": {}})
        if segs == ["validate-yaml"] and method == "POST":
            return self._validate_yaml(record)
        if segs[:1] == ["telemetry"]:
            return _json({})
        if segs == ["repos", "create"] and method == "POST":
            return self._create_repo(record)
        if segs == ["repos", "delete"] and method == "DELETE":
            return self._delete_repo(record)
        if segs == ["repos", "move"] and method == "POST":
            return self._move_repo(record)
        if len(segs) >= 3 and segs[0] in _TYPE_BY_PLURAL:
            repo_type = _TYPE_BY_PLURAL[segs[0]]
            repo_id = f"{unquote(segs[1])}/{unquote(segs[2])}"
            rest = segs[3:]
            action = rest[0] if rest else None
            args = [unquote(s) for s in rest[1:]]
            if action is None and method == "GET":
                return self._repo_info(repo_type, repo_id, None, query, record)
            if action == "revision" and method == "GET" and args:
                return self._repo_info(repo_type, repo_id, "/".join(args), query, record)
            if action == "tree" and method == "GET" and args:
                return self._tree(repo_type, repo_id, args[0], "/".join(args[1:]), query, record)
            if action == "paths-info" and method == "POST" and args:
                return self._paths_info(repo_type, repo_id, "/".join(args), record)
            if action == "preupload" and method == "POST" and args:
                return self._preupload(repo_type, repo_id, "/".join(args), query, record)
            if action == "commit" and method == "POST" and args:
                return self._commit(repo_type, repo_id, "/".join(args), query, record)
            if action == "branch" and args and method in ("POST", "DELETE"):
                return self._branch(method, repo_type, repo_id, "/".join(args), record)
            if action == "tag" and args and method in ("POST", "DELETE"):
                return self._tag(method, repo_type, repo_id, "/".join(args), record)
            if action == "refs" and method == "GET" and not args:
                return self._refs(repo_type, repo_id, query, record)
            if action == "commits" and method == "GET" and args:
                return self._list_commits(repo_type, repo_id, "/".join(args), record)
            if action == "settings" and method == "PUT" and not args:
                return self._settings(repo_type, repo_id, record)
        return None

    def _handle_repo_routes(self, method: str, segs: list[str], query: dict, record: RequestRecord):
        repo_type = "model"
        if segs[0] in _TYPE_BY_PLURAL and segs[0] != "models" and len(segs) >= 3:
            repo_type = _TYPE_BY_PLURAL[segs[0]]
            segs = segs[1:]
        if len(segs) < 3:
            return None
        namespace, name = unquote(segs[0]), unquote(segs[1])
        if name.endswith(".git") and segs[2:5] == ["info", "lfs", "objects"] and len(segs) == 6:
            repo_id = f"{namespace}/{name[: -len('.git')]}"
            if segs[5] == "batch" and method == "POST":
                return self._lfs_batch(repo_type, repo_id, record)
            if segs[5] == "verify" and method == "POST":
                return self._lfs_verify(repo_type, repo_id, record)
            return None
        if segs[2] == "resolve" and len(segs) >= 5 and method in ("GET", "HEAD"):
            revision = unquote(segs[3])
            path = "/".join(unquote(s) for s in segs[4:])
            return self._resolve_file(repo_type, f"{namespace}/{name}", revision, path, record)
        return None

    def _handle_internal(self, method: str, segs: list[str], query: dict, record: RequestRecord):
        # /__fakehub__/lfs/{oid}            PUT: single-part upload; POST: multipart completion
        # /__fakehub__/lfs/{oid}/part/{n}   PUT: one part of a multipart upload
        # /__fakehub__/cdn/{sha256}          GET/HEAD: LFS content (the "CDN")
        if len(segs) == 2 and segs[0] == "lfs" and method == "PUT":
            return self._lfs_put(segs[1], record.body)
        if len(segs) == 2 and segs[0] == "lfs" and method == "POST":
            return self._lfs_complete(segs[1], record.body)
        if len(segs) == 4 and segs[0] == "lfs" and segs[2] == "part" and method == "PUT":
            return self._lfs_put_part(segs[1], int(segs[3]), record.body)
        if len(segs) == 2 and segs[0] == "cdn" and method in ("GET", "HEAD"):
            data = self.lfs_objects.get(segs[1])
            if data is None:
                raise _HttpError(404, "Object not found")
            headers = {
                "ETag": f'"{segs[1]}"',
                "Content-Type": "application/octet-stream",
                "Accept-Ranges": "bytes",
            }
            return self._serve_bytes(data, headers, record)
        return None

    # -- endpoints: account ------------------------------------------------------------------------------------------

    def _whoami(self, record: RequestRecord) -> _Response:
        user = self._auth_user(record)
        if user is None:
            raise _HttpError(401, "Invalid credentials in Authorization header")
        return _json(
            {
                "type": "user",
                "id": hashlib.sha1(user.encode()).hexdigest()[:24],
                "name": user,
                "fullname": user,
                "email": None,
                "emailVerified": True,
                "canPay": False,
                "isPro": False,
                "periodEnd": None,
                "avatarUrl": "",
                "orgs": [{"type": "org", "name": org, "fullname": org, "roleInOrg": "admin"} for org in self.orgs],
                "auth": {
                    "type": "access_token",
                    "accessToken": {"displayName": "fake-hub-token", "role": "write", "createdAt": _now_iso()},
                },
            }
        )

    def _validate_yaml(self, record: RequestRecord) -> _Response:
        payload = json.loads(record.body or b"{}")
        content = payload.get("content", "")
        if content.startswith("---") and content.count("\n---") < 1:
            return _json({"errors": [{"message": "Unterminated YAML front matter"}], "warnings": []}, status=400)
        return _json({"errors": [], "warnings": []})

    # -- endpoints: repos --------------------------------------------------------------------------------------------

    def _create_repo(self, record: RequestRecord) -> _Response:
        user = self._require_user(record)
        payload = json.loads(record.body or b"{}")
        name = payload.get("name")
        namespace = payload.get("organization") or user
        repo_type = payload.get("type") or "model"
        if repo_type not in _URL_PREFIX_BY_TYPE:
            raise _HttpError(400, f"Invalid repo type {repo_type!r}")
        if not name or "/" in name or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name) or "--" in name:
            raise _HttpError(400, f"Invalid repo name {name!r}")
        if repo_type == "space" and payload.get("sdk") is None:
            raise _HttpError(400, "sdk is required for spaces")
        repo_id = f"{namespace}/{name}"
        existing = self.repos.get((repo_type, repo_id))
        if existing is not None:
            return _json(
                {"error": f"You already created this {repo_type} repo", "url": self._repo_url(existing)},
                status=409,
                headers={"X-Error-Message": f"You already created this {repo_type} repo"},
            )
        private = payload.get("private")
        visibility = payload.get("visibility")
        is_private = bool(private) or visibility in ("private", "protected")
        repo = self._new_repo(repo_type, repo_id, is_private)
        return _json({"url": self._repo_url(repo), "name": repo_id, "id": repo.uid})

    def _delete_repo(self, record: RequestRecord) -> _Response:
        user = self._require_user(record)
        payload = json.loads(record.body or b"{}")
        repo_type = payload.get("type") or "model"
        repo_id = f"{payload.get('organization') or user}/{payload.get('name')}"
        if self.repos.pop((repo_type, repo_id), None) is None:
            raise _HttpError(404, "Repository not found", "RepoNotFound")
        return _Response(200, b"", {"Content-Type": "text/plain"})

    def _move_repo(self, record: RequestRecord) -> _Response:
        self._require_user(record)
        payload = json.loads(record.body or b"{}")
        repo_type = payload.get("type") or "model"
        src, dst = payload.get("fromRepo"), payload.get("toRepo")
        if (repo_type, src) not in self.repos:
            raise _HttpError(404, "Repository not found", "RepoNotFound")
        if (repo_type, dst) in self.repos:
            raise _HttpError(409, "A repo with this name already exists")
        repo = self.repos.pop((repo_type, src))
        repo.repo_id = dst
        self.repos[(repo_type, dst)] = repo
        return _Response(200, b"", {"Content-Type": "text/plain"})

    def _settings(self, repo_type: str, repo_id: str, record: RequestRecord) -> _Response:
        repo = self._get_repo(repo_type, repo_id, record, write=True)
        payload = json.loads(record.body or b"{}")
        if "private" in payload and payload["private"] is not None:
            repo.private = bool(payload["private"])
        if payload.get("visibility") is not None:
            repo.private = payload["visibility"] in ("private", "protected")
        return _json({})

    def _repo_info(self, repo_type: str, repo_id: str, revision: str | None, query: dict, record) -> _Response:
        repo = self._get_repo(repo_type, repo_id, record)
        commit = self._resolve(repo, revision or "main")
        with_blobs = _truthy(query.get("blobs"))
        siblings = []
        for path in sorted(commit.files):
            blob = commit.files[path]
            sibling: dict[str, Any] = {"rfilename": path}
            if with_blobs:
                sibling.update({"size": blob.size, "blobId": blob.git_oid})
                if blob.lfs:
                    sibling["lfs"] = {"size": blob.size, "sha256": blob.sha256, "pointerSize": blob.pointer_size}
            siblings.append(sibling)
        namespace = repo_id.split("/", 1)[0]
        info: dict[str, Any] = {
            "_id": repo.uid,
            "id": repo_id,
            "author": namespace,
            "sha": commit.oid,
            "lastModified": commit.date,
            "createdAt": repo.created_at,
            "private": repo.private,
            "disabled": False,
            "gated": False,
            "downloads": 0,
            "likes": 0,
            "tags": [],
            "siblings": siblings,
            "usedStorage": sum(b.size for b in commit.files.values()),
        }
        if repo_type == "model":
            info["modelId"] = repo_id
            info["spaces"] = []
        if repo_type == "space":
            info["sdk"] = "static"
            info["runtime"] = {"stage": "NO_APP_FILE", "hardware": {"current": None, "requested": None}}
        expand = query.get("expand") or query.get("expand[]")
        if expand:
            info = {k: v for k, v in info.items() if k in ("_id", "id") or k in expand}
        return _json(info)

    # -- endpoints: listings -----------------------------------------------------------------------------------------

    def _folder_oid(self, files: dict[str, Blob], folder: str) -> str:
        prefix = folder + "/"
        content = "\n".join(f"{p}:{b.git_oid}" for p, b in sorted(files.items()) if p.startswith(prefix))
        return hashlib.sha1(content.encode()).hexdigest()

    def _last_commit_for(self, repo: Repo, head: Commit, path: str, is_folder: bool) -> dict:
        def signature(commit: Commit):
            if is_folder:
                return self._folder_oid(commit.files, path)
            blob = commit.files.get(path)
            return blob.git_oid if blob else None

        history = repo.ancestors(head.oid)
        last = history[0]
        current = signature(history[0])
        for commit in history[1:]:
            if signature(commit) != current:
                break
            last = commit
        return {"id": last.oid, "title": last.title, "date": last.date}

    def _entry(self, repo: Repo, commit: Commit, path: str, expand: bool) -> dict:
        blob = commit.files.get(path)
        if blob is not None:
            entry: dict[str, Any] = {"type": "file", "oid": blob.git_oid, "size": blob.size, "path": path}
            if blob.lfs:
                entry["lfs"] = {"oid": blob.sha256, "size": blob.size, "pointerSize": blob.pointer_size}
        else:
            entry = {"type": "directory", "oid": self._folder_oid(commit.files, path), "size": 0, "path": path}
        if expand:
            entry["lastCommit"] = self._last_commit_for(repo, commit, path, blob is None)
        return entry

    @staticmethod
    def _folders(files: Iterable[str]) -> set[str]:
        folders = set()
        for path in files:
            parts = path.split("/")[:-1]
            for i in range(1, len(parts) + 1):
                folders.add("/".join(parts[:i]))
        return folders

    def _tree(self, repo_type, repo_id, revision, path, query, record) -> _Response:
        repo = self._get_repo(repo_type, repo_id, record)
        commit = self._resolve(repo, revision)
        recursive = _truthy(query.get("recursive"))
        expand = _truthy(query.get("expand"))
        path = path.strip("/")
        folders = self._folders(commit.files)
        if path and path not in folders:
            raise _HttpError(
                404, f"Entry not found: {path}", "EntryNotFound", headers={"X-Repo-Commit": commit.oid}
            )
        prefix = f"{path}/" if path else ""
        selected = []
        for candidate in sorted(folders) + sorted(commit.files):
            if not candidate.startswith(prefix):
                continue
            relative = candidate[len(prefix):]
            if recursive or "/" not in relative:
                selected.append(candidate)
        # Hub order: folders first, then files (each sorted) - kept as built above.
        page_size = min(self.tree_page_size, 50) if expand else self.tree_page_size
        cursor = int((query.get("cursor") or ["0"])[-1] or 0)
        page = selected[cursor : cursor + page_size]
        headers = {"X-Repo-Commit": commit.oid}
        if cursor + page_size < len(selected):
            params = {k: v[-1] for k, v in query.items() if k != "cursor"}
            params["cursor"] = str(cursor + page_size)
            next_url = f"{self.url}{record.path}?{urlencode(params)}"
            headers["Link"] = f'<{next_url}>; rel="next"'
        return _json([self._entry(repo, commit, p, expand) for p in page], headers=headers)

    def _paths_info(self, repo_type, repo_id, revision, record) -> _Response:
        repo = self._get_repo(repo_type, repo_id, record)
        commit = self._resolve(repo, revision)
        content_type = record.headers.get("content-type", "")
        if "json" in content_type:
            payload = json.loads(record.body or b"{}")
            paths = payload.get("paths") or []
            expand = bool(payload.get("expand"))
        else:
            form = parse_qs(record.body.decode(), keep_blank_values=True)
            paths = form.get("paths", [])
            expand = _truthy(form.get("expand"))
        folders = self._folders(commit.files)
        out = []
        for path in paths:
            path = path.strip("/")
            if path in commit.files or path in folders:
                out.append(self._entry(repo, commit, path, expand))
        return _json(out)

    def _refs(self, repo_type, repo_id, query, record) -> _Response:
        repo = self._get_repo(repo_type, repo_id, record)

        def ref(name: str, full: str, oid: str) -> dict:
            return {"name": name, "ref": full, "targetCommit": oid}

        data = {
            "branches": [ref(n, f"refs/heads/{n}", o) for n, o in sorted(repo.branches.items())],
            "converts": [],
            "tags": [ref(n, f"refs/tags/{n}", o) for n, o in sorted(repo.tags.items())],
        }
        if _truthy(query.get("include_prs")):
            data["pullRequests"] = [ref(f"refs/pr/{n}", f"refs/pr/{n}", o) for n, o in sorted(repo.prs.items())]
        return _json(data)

    def _list_commits(self, repo_type, repo_id, revision, record) -> _Response:
        repo = self._get_repo(repo_type, repo_id, record)
        head = self._resolve(repo, revision)
        return _json(
            [
                {
                    "id": c.oid,
                    "title": c.title,
                    "message": c.message,
                    "date": c.date,
                    "authors": [{"user": c.author, "avatar": ""}],
                }
                for c in repo.ancestors(head.oid)
            ]
        )

    # -- endpoints: refs ---------------------------------------------------------------------------------------------

    def _branch(self, method, repo_type, repo_id, branch, record) -> _Response:
        repo = self._get_repo(repo_type, repo_id, record, write=True)
        if method == "DELETE":
            if branch not in repo.branches:
                raise _HttpError(404, f"Invalid rev id: {branch}", "RevisionNotFound")
            if branch == "main":
                raise _HttpError(403, "Cannot delete the default branch")
            del repo.branches[branch]
            return _json({})
        if branch.startswith("refs/") or not re.fullmatch(r"[A-Za-z0-9._/-]+", branch):
            raise _HttpError(400, f"Invalid branch name {branch!r}")
        if branch in repo.branches:
            raise _HttpError(409, f"Reference already exists: refs/heads/{branch}")
        payload = json.loads(record.body or b"{}")
        start = self._resolve(repo, payload.get("startingPoint") or "main")
        if payload.get("emptyBranch"):
            self._add_commit(repo, branch, None, {}, "initial commit", "")
        else:
            repo.branches[branch] = start.oid
        return _json({})

    def _tag(self, method, repo_type, repo_id, name, record) -> _Response:
        repo = self._get_repo(repo_type, repo_id, record, write=True)
        if method == "DELETE":
            if name not in repo.tags:
                raise _HttpError(404, f"Invalid rev id: {name}", "RevisionNotFound")
            del repo.tags[name]
            return _json({})
        # POST /tag/{revision} with {"tag": name}
        payload = json.loads(record.body or b"{}")
        tag = payload.get("tag")
        if not tag:
            raise _HttpError(400, "Missing tag name")
        if tag in repo.tags:
            raise _HttpError(409, f"Tag already exists: {tag}")
        repo.tags[tag] = self._resolve(repo, name).oid
        return _json({})

    # -- endpoints: upload -------------------------------------------------------------------------------------------

    def _gitignore_patterns(self, files: dict[str, Blob], override: str | None) -> list[str]:
        text = override
        if text is None and ".gitignore" in files:
            text = files[".gitignore"].data.decode("utf-8", "replace")
        if not text:
            return []
        return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]

    def _writable_head(self, repo: Repo, revision: str, create_pr: bool) -> Commit:
        if create_pr:
            return self._resolve(repo, revision)
        if revision in repo.branches or _PR_REF.match(revision):
            return self._resolve(repo, revision)
        if repo.resolve(revision) is not None:
            raise _HttpError(400, f"Invalid rev id: {revision} is not a branch")
        raise _HttpError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def _preupload(self, repo_type, repo_id, revision, query, record) -> _Response:
        repo = self._get_repo(repo_type, repo_id, record, write=True)
        head = self._writable_head(repo, revision, _truthy(query.get("create_pr")))
        payload = json.loads(record.body or b"{}")
        ignore = self._gitignore_patterns(head.files, payload.get("gitIgnore"))
        out = []
        for item in payload.get("files", []):
            path = _validate_path(item["path"])
            sample = base64.b64decode(item.get("sample") or "")
            mode = self._upload_mode(path, int(item.get("size", 0)), sample, head.files)
            existing = head.files.get(path)
            remote_oid = None
            if existing is not None:
                remote_oid = existing.sha256 if existing.lfs else existing.git_oid
            out.append(
                {
                    "path": path,
                    "uploadMode": mode,
                    "shouldIgnore": bool(ignore) and _matches_any(path, ignore),
                    "oid": remote_oid,
                }
            )
        return _json({"files": out, "commitOid": head.oid})

    def _lfs_batch(self, repo_type, repo_id, record) -> _Response:
        payload = json.loads(record.body or b"{}")
        operation = payload.get("operation")
        repo = self._get_repo(repo_type, repo_id, record, write=(operation == "upload"))
        objects = []
        for obj in payload.get("objects", []):
            oid, size = obj.get("oid"), obj.get("size")
            if not isinstance(oid, str) or not re.fullmatch(r"[0-9a-f]{64}", oid) or not isinstance(size, int):
                error = {"code": 422, "message": "Invalid object"}
                objects.append({"oid": str(oid), "size": int(size or 0), "error": error})
                continue
            if operation == "download":
                if oid in self.lfs_objects:
                    objects.append(
                        {
                            "oid": oid,
                            "size": size,
                            "authenticated": True,
                            "actions": {"download": {"href": f"{self.cdn_url}/__fakehub__/cdn/{oid}"}},
                        }
                    )
                else:
                    error = {"code": 404, "message": "Object does not exist"}
                    objects.append({"oid": oid, "size": size, "error": error})
                continue
            if oid in self.lfs_objects and len(self.lfs_objects[oid]) == size:
                objects.append({"oid": oid, "size": size})  # already there => no action
                continue
            href = f"{self.url}/__fakehub__/lfs/{oid}"
            upload: dict[str, Any] = {"href": href}
            if self.multipart_chunk_size is not None and size > self.multipart_chunk_size:
                chunk = self.multipart_chunk_size
                n_parts = -(-size // chunk)
                header = {"chunk_size": str(chunk)}
                header.update({str(i): f"{href}/part/{i}" for i in range(1, n_parts + 1)})
                upload["header"] = header
            self._lfs_parts[oid] = {}
            objects.append(
                {
                    "oid": oid,
                    "size": size,
                    "authenticated": True,
                    "actions": {
                        "upload": upload,
                        "verify": {"href": f"{self._repo_url(repo)}.git/info/lfs/objects/verify"},
                    },
                }
            )
        return _json(
            {"transfer": "basic", "objects": objects, "hash_algo": "sha256"},
            content_type="application/vnd.git-lfs+json",
        )

    def _lfs_put(self, oid: str, body: bytes) -> _Response:
        if hashlib.sha256(body).hexdigest() != oid:
            raise _HttpError(400, "Uploaded content does not match the announced sha256")
        self.lfs_objects[oid] = body
        self._lfs_parts.pop(oid, None)
        return _Response(200, b"", {"ETag": f'"{hashlib.md5(body).hexdigest()}"'})

    def _lfs_put_part(self, oid: str, part: int, body: bytes) -> _Response:
        if oid not in self._lfs_parts:
            raise _HttpError(404, "No multipart upload in progress for this object")
        self._lfs_parts[oid][part] = body
        return _Response(200, b"", {"ETag": f'"{hashlib.md5(body).hexdigest()}"'})

    def _lfs_complete(self, oid: str, body: bytes) -> _Response:
        payload = json.loads(body or b"{}")
        parts = self._lfs_parts.get(oid)
        if parts is None or payload.get("oid") != oid:
            raise _HttpError(400, "Invalid multipart completion")
        chunks = []
        for item in sorted(payload.get("parts", []), key=lambda p: p["partNumber"]):
            data = parts.get(item["partNumber"])
            if data is None or item.get("etag", "").strip('"') != hashlib.md5(data).hexdigest():
                raise _HttpError(400, f"Bad part {item.get('partNumber')}")
            chunks.append(data)
        return self._lfs_put(oid, b"".join(chunks))

    def _lfs_verify(self, repo_type, repo_id, record) -> _Response:
        self._get_repo(repo_type, repo_id, record, write=True)
        payload = json.loads(record.body or b"{}")
        data = self.lfs_objects.get(payload.get("oid"))
        if data is None or len(data) != payload.get("size"):
            raise _HttpError(404, "Object not found")
        return _json({}, content_type="application/vnd.git-lfs+json")

    def _commit(self, repo_type, repo_id, revision, query, record) -> _Response:
        # Decode base64 file payloads first (even for commits that will fail) so leak checks see them.
        lines = []
        for raw in record.body.splitlines():
            if raw.strip():
                try:
                    lines.append(json.loads(raw))
                except json.JSONDecodeError as err:
                    raise _HttpError(400, f"Invalid NDJSON line: {err}") from None
        for line in lines:
            if line.get("key") == "file" and isinstance(line.get("value"), dict):
                value = line["value"]
                try:
                    if value.get("encoding") == "base64":
                        self.decoded_commit_contents.append(base64.b64decode(value.get("content", "")))
                except (ValueError, TypeError):
                    pass

        repo = self._get_repo(repo_type, repo_id, record, write=True)
        if self.fail_next_commit:
            self.fail_next_commit = int(self.fail_next_commit) - 1
            raise _HttpError(500, "Internal Error - injected commit failure")

        create_pr = _truthy(query.get("create_pr"))
        if not lines or lines[0].get("key") != "header":
            raise _HttpError(400, "The first line of the payload must be the header")
        header = lines[0].get("value") or {}
        title = header.get("summary") or ""
        if not title.strip():
            raise _HttpError(400, "Commit summary is required")
        description = header.get("description") or ""
        head = self._writable_head(repo, revision, create_pr)
        parent_commit = header.get("parentCommit")
        base = head
        if parent_commit:
            parent_oid = repo.resolve(parent_commit)
            if parent_oid is None:
                raise _HttpError(404, f"Invalid rev id: {parent_commit}", "RevisionNotFound")
            if create_pr:
                base = repo.commits[parent_oid]
            elif parent_oid != head.oid:
                raise _HttpError(412, "A commit has happened since. Please refresh and try again.")

        new_files = dict(base.files)
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value") or {}
            if key == "file":
                path = _validate_path(value.get("path"))
                if value.get("encoding") == "base64":
                    data = base64.b64decode(value.get("content", ""))
                else:
                    data = str(value.get("content", "")).encode()
                if len(data) > _MAX_REGULAR_FILE_SIZE:
                    raise _HttpError(
                        400, f"Your push was rejected because it contains files larger than 10 MiB ({path}). Use LFS."
                    )
                new_files[path] = Blob.regular(data)
            elif key == "lfsFile":
                path = _validate_path(value.get("path"))
                oid = value.get("oid")
                data = self.lfs_objects.get(oid)
                if value.get("algo", "sha256") != "sha256" or data is None:
                    raise _HttpError(400, f"LFS object {oid} was not uploaded (path {path})")
                if value.get("size") is not None and int(value["size"]) != len(data):
                    raise _HttpError(400, f"Size mismatch for LFS object {oid} (path {path})")
                new_files[path] = Blob.large(data)
            elif key == "deletedFile":
                path = value.get("path")
                if path not in new_files:
                    raise _HttpError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                del new_files[path]
            elif key == "deletedFolder":
                folder = str(value.get("path", "")).strip("/")
                doomed = [p for p in new_files if folder == "" or p.startswith(folder + "/")]
                if not doomed:
                    raise _HttpError(404, f"A folder with this name doesn't exist: {folder}", "EntryNotFound")
                for p in doomed:
                    del new_files[p]
            else:
                raise _HttpError(400, f"Unknown operation key {key!r}")

        pr_url = None
        pr_num = None
        if create_pr:
            pr_num = max([0, *repo.prs.keys()]) + 1
            ref = f"refs/pr/{pr_num}"
        else:
            ref = revision  # a branch, or refs/pr/N
        commit = self._add_commit(repo, ref, base.oid, new_files, title, description)
        if pr_num is not None:
            pr_url = f"{self._repo_url(repo)}/discussions/{pr_num}"
        return _json(
            {
                "success": True,
                "commitOid": commit.oid,
                "commitUrl": f"{self._repo_url(repo)}/commit/{commit.oid}",
                "hookOutput": "",
                "pullRequestUrl": pr_url,
            }
        )

    # -- endpoints: download -----------------------------------------------------------------------------------------

    def _resolve_file(self, repo_type, repo_id, revision, path, record) -> _Response:
        repo = self._get_repo(repo_type, repo_id, record)
        commit = self._resolve(repo, revision)
        blob = commit.files.get(path)
        if blob is None:
            raise _HttpError(404, "Entry not found", "EntryNotFound", headers={"X-Repo-Commit": commit.oid})
        filename = path.rsplit("/", 1)[-1]
        ascii_name = filename.encode("ascii", "replace").decode().replace('"', "")
        headers = {
            "X-Repo-Commit": commit.oid,
            "ETag": f'"{blob.etag}"',
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f"inline; filename*=UTF-8''{quote(filename)}; filename=\"{ascii_name}\";",
        }
        if blob.lfs:
            headers["X-Linked-Etag"] = f'"{blob.sha256}"'
            headers["X-Linked-Size"] = str(blob.size)
            if self.lfs_cdn_redirect:
                headers["Location"] = f"{self.cdn_url}/__fakehub__/cdn/{blob.sha256}"
                headers["ETag"] = f'"{blob.git_oid}"'  # the Hub's 302 carries the pointer's git oid
                return _Response(302, b"", headers)
        return self._serve_bytes(blob.data, headers, record)

    def _serve_bytes(self, data: bytes, headers: dict[str, str], record: RequestRecord) -> _Response:
        range_header = record.headers.get("range")
        if range_header:
            m = _RANGE.match(range_header)
            size = len(data)
            if not m or (not m.group(1) and not m.group(2)):
                raise _HttpError(416, "Invalid range", headers={"Content-Range": f"bytes */{size}"})
            if m.group(1):
                start = int(m.group(1))
                end = int(m.group(2)) if m.group(2) else size - 1
            else:  # suffix range: last N bytes
                start = max(size - int(m.group(2)), 0)
                end = size - 1
            end = min(end, size - 1)
            if start >= size or start > end:
                raise _HttpError(416, "Range not satisfiable", headers={"Content-Range": f"bytes */{size}"})
            return _Response(206, data[start : end + 1], {**headers, "Content-Range": f"bytes {start}-{end}/{size}"})
        return _Response(200, data, headers)
