"""What the Hub test double stores: blobs (regular or LFS), commits (full tree snapshots), model
and dataset repos with branches, and the record of every request it received."""

from __future__ import annotations

import fnmatch
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone

# Same content as the `.gitattributes` the real Hub puts in the initial commit of a new model repo.
DEFAULT_GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in (
        "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gz", "*.h5", "*.joblib", "*.lfs.*", "*.mlmodel",
        "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot", "*.parquet", "*.pb", "*.pickle", "*.pkl", "*.pt",
        "*.pth", "*.rar", "*.safetensors", "saved_model/**/*", "*.tar.*", "*.tar", "*.tflite", "*.tgz", "*.wasm",
        "*.xz", "*.zip", "*.zst", "*tfevents*",
    )
)
LFS_SIZE_THRESHOLD = 10 * 1024 * 1024  # files above this go through LFS whatever their type
MAX_REGULAR_FILE_SIZE = 10 * 1024 * 1024  # the real Hub rejects non-LFS files above 10 MiB


class HttpError(Exception):
    """An error answer: status, message, and the X-Error-Code the client maps to its exceptions."""

    def __init__(self, status: int, message: str, error_code: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_code = error_code
        self.headers = headers or {}


URL_PREFIXES = {"model": "", "dataset": "datasets/"}  # the repo types the double serves, and their URL prefixes


def repo_key(repo_type: str, repo_id: str) -> str:
    """How the double names a repo: `ORG/NAME` for a model, `datasets/ORG/NAME` for a dataset."""
    if repo_type not in URL_PREFIXES:
        raise HttpError(400, f"the Hub test double serves model and dataset repos, not {repo_type!r} repos")
    return URL_PREFIXES[repo_type] + repo_id


def split_key(key: str) -> tuple[str, str]:
    """(repo_type, repo_id) of a key made by repo_key."""
    if key.startswith(URL_PREFIXES["dataset"]):
        return "dataset", key.removeprefix(URL_PREFIXES["dataset"])
    return "model", key


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob holding `data` (what the Hub reports as the `oid` of regular files)."""
    return hashlib.sha1(b"blob " + str(len(data)).encode() + b"\0" + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def now_iso() -> str:
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
    def regular(cls, data: bytes) -> Blob:
        return cls(data=data, lfs=False, sha256=hashlib.sha256(data).hexdigest(), git_oid=git_blob_sha1(data))

    @classmethod
    def large(cls, data: bytes) -> Blob:
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
    """A model repo: commits, branches (main first), visibility. `key` names it in the double: the id for a model
    repo, `datasets/ORG/NAME` for a dataset repo (the Hub's own URL path for it)."""

    repo_id: str
    private: bool
    created_at: str
    repo_type: str = "model"
    commits: dict[str, Commit] = field(default_factory=dict)
    order: list[str] = field(default_factory=list)  # commit oids, oldest first
    branches: dict[str, str] = field(default_factory=dict)
    uid: str = ""

    @property
    def key(self) -> str:
        return repo_key(self.repo_type, self.repo_id)

    def resolve(self, revision: str) -> str | None:
        """The commit oid of a branch name, `refs/heads/NAME`, or a (possibly abbreviated) commit oid."""
        branch = revision.removeprefix("refs/heads/")
        if branch in self.branches:
            return self.branches[branch]
        if re.fullmatch(r"[0-9a-f]{7,40}", revision):
            matches = [oid for oid in self.commits if oid.startswith(revision)]
            if len(matches) == 1:
                return matches[0]
        return None


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


def lfs_patterns(files: dict[str, Blob]) -> list[str]:
    """The paths patterns that `.gitattributes` routes through LFS."""
    attributes = files.get(".gitattributes")
    if attributes is None:
        return []
    patterns = []
    for line in attributes.data.decode("utf-8", "replace").splitlines():
        parts = line.strip().split()
        if parts and not parts[0].startswith("#") and "filter=lfs" in parts[1:]:
            patterns.append(parts[0])
    return patterns


def matches_any(path: str, patterns: Iterable[str]) -> bool:
    """gitattributes-style matching: a pattern without '/' matches the name in any folder."""
    name = path.rsplit("/", 1)[-1]
    for pattern in patterns:
        pat = pattern.rstrip("/").removeprefix("/")
        if "/" in pattern.rstrip("/"):
            if fnmatch.fnmatchcase(path, pat) or fnmatch.fnmatchcase(path, pat + "/*"):
                return True
        elif fnmatch.fnmatchcase(name, pat) or any(fnmatch.fnmatchcase(seg, pat) for seg in path.split("/")[:-1]):
            return True
    return False


def validate_path(path: str) -> str:
    if not isinstance(path, str) or not path or path.startswith("/") or path.endswith("/"):
        raise HttpError(400, f"Invalid path: {path!r}")
    segments = path.split("/")
    if any(seg in ("", ".", "..") for seg in segments) or segments[0] == ".git":
        raise HttpError(400, f"Invalid path: {path!r}")
    return path
