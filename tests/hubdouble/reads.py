"""Read endpoints of the Hub test double: repo info, the file tree, and /resolve downloads."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote

from .storage import Blob, Commit, HttpError, Repo
from .transport import Response, json_response, truthy


def folders_of(files: Iterable[str]) -> set[str]:
    folders = set()
    for path in files:
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            folders.add("/".join(parts[:i]))
    return folders


def folder_oid(files: dict[str, Blob], folder: str) -> str:
    prefix = folder + "/"
    content = "\n".join(f"{p}:{b.git_oid}" for p, b in sorted(files.items()) if p.startswith(prefix))
    return hashlib.sha1(content.encode()).hexdigest()


def tree_entry(commit: Commit, path: str) -> dict:
    blob = commit.files.get(path)
    if blob is None:
        return {"type": "directory", "oid": folder_oid(commit.files, path), "size": 0, "path": path}
    entry: dict[str, Any] = {"type": "file", "oid": blob.git_oid, "size": blob.size, "path": path}
    if blob.lfs:
        entry["lfs"] = {"oid": blob.sha256, "size": blob.size, "pointerSize": blob.pointer_size}
    return entry


class ReadEndpoints:
    """Mixed into FakeHubServer, which provides get_repo, resolve and the url."""

    def repo_info(self, repo_id: str, revision: str | None, record) -> Response:
        repo = self.get_repo(repo_id, record)
        commit = self.resolve(repo, revision or "main")
        return json_response({
            "_id": repo.uid, "id": repo.repo_id, "modelId": repo.repo_id, "author": repo.repo_id.split("/", 1)[0], "sha": commit.oid,
            "lastModified": commit.date, "createdAt": repo.created_at, "private": repo.private, "disabled": False,
            "gated": False, "downloads": 0, "likes": 0, "tags": [], "spaces": [],
            "siblings": [{"rfilename": path} for path in sorted(commit.files)],
            "usedStorage": sum(b.size for b in commit.files.values()),
        })

    def tree(self, repo_id: str, revision: str, path: str, query: dict, record) -> Response:
        repo = self.get_repo(repo_id, record)
        commit = self.resolve(repo, revision)
        path = path.strip("/")
        folders = folders_of(commit.files)
        if path and path not in folders:
            raise HttpError(404, f"Entry not found: {path}", "EntryNotFound", headers={"X-Repo-Commit": commit.oid})
        prefix = f"{path}/" if path else ""
        recursive = truthy(query.get("recursive"))
        selected = [candidate for candidate in sorted(folders) + sorted(commit.files)  # Hub order: folders, then files
                    if candidate.startswith(prefix) and (recursive or "/" not in candidate[len(prefix):])]
        return json_response([tree_entry(commit, p) for p in selected], headers={"X-Repo-Commit": commit.oid})

    def resolve_file(self, repo_id: str, revision: str, path: str, record) -> Response:
        repo: Repo = self.get_repo(repo_id, record)
        commit = self.resolve(repo, revision)
        blob = commit.files.get(path)
        if blob is None:
            raise HttpError(404, "Entry not found", "EntryNotFound", headers={"X-Repo-Commit": commit.oid})
        filename = path.rsplit("/", 1)[-1]
        ascii_name = filename.encode("ascii", "replace").decode().replace('"', "")
        headers = {
            "X-Repo-Commit": commit.oid,
            "ETag": f'"{blob.etag}"',
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f"inline; filename*=UTF-8''{quote(filename)}; filename=\"{ascii_name}\";",
        }
        if blob.lfs:
            headers["X-Linked-Etag"] = f'"{blob.sha256}"'
            headers["X-Linked-Size"] = str(blob.size)
        return Response(200, blob.data, headers)
