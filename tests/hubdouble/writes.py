"""Write endpoints of the Hub test double: repo and branch creation, the card check, and the upload
protocol (preupload, LFS batch + PUT + verify, the atomic NDJSON commit)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from typing import Any

from .storage import MAX_REGULAR_FILE_SIZE, Blob, Commit, HttpError, Repo, repo_key, validate_path
from .transport import Response, json_response

LFS_JSON = "application/vnd.git-lfs+json"


def parse_ndjson(body: bytes) -> list[dict]:
    lines = []
    for raw in body.splitlines():
        if raw.strip():
            try:
                lines.append(json.loads(raw))
            except json.JSONDecodeError as err:
                raise HttpError(400, f"Invalid NDJSON line: {err}") from None
    return lines


def inline_payloads(lines: list[dict]) -> list[bytes]:
    """The decoded content of the base64 `file` lines of a commit payload."""
    decoded = []
    for line in lines:
        value = line.get("value")
        if line.get("key") == "file" and isinstance(value, dict) and value.get("encoding") == "base64":
            try:
                decoded.append(base64.b64decode(value.get("content", "")))
            except (ValueError, TypeError):
                pass
    return decoded


class WriteEndpoints:
    """Mixed into FakeHubServer, which provides the state, auth, lookups and commit bookkeeping."""

    def validate_yaml(self, record) -> Response:
        content = json.loads(record.body or b"{}").get("content", "")
        if content.startswith("---") and content.count("\n---") < 1:
            return json_response({"errors": [{"message": "Unterminated YAML front matter"}], "warnings": []}, status=400)
        return json_response({"errors": [], "warnings": []})

    def create_repo_endpoint(self, record) -> Response:
        user = self.require_user(record)
        payload = json.loads(record.body or b"{}")
        name, repo_type = payload.get("name"), payload.get("type") or "model"
        if not name or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name) or "--" in name:
            raise HttpError(400, f"Invalid repo name {name!r}")
        repo_id = repo_key(repo_type, f"{payload.get('organization') or user}/{name}")
        existing = self.repos.get(repo_id)
        if existing is not None:
            message = f"You already created this {repo_type} repo"
            return json_response({"error": message, "url": self.repo_url(existing)}, status=409, headers={"X-Error-Message": message})
        private = bool(payload.get("private")) or payload.get("visibility") in ("private", "protected")
        repo = self.new_repo(repo_id, private)
        return json_response({"url": self.repo_url(repo), "name": repo.repo_id, "id": repo.uid})

    def create_branch(self, repo_id: str, branch: str, record) -> Response:
        repo = self.get_repo(repo_id, record, write=True)
        if branch.startswith("refs/") or not re.fullmatch(r"[A-Za-z0-9._/-]+", branch):
            raise HttpError(400, f"Invalid branch name {branch!r}")
        if branch in repo.branches:
            raise HttpError(409, f"Reference already exists: refs/heads/{branch}")
        start = json.loads(record.body or b"{}").get("startingPoint") or "main"
        repo.branches[branch] = self.resolve(repo, start).oid
        return json_response({})

    def writable_head(self, repo: Repo, revision: str) -> Commit:
        if revision in repo.branches:
            return self.resolve(repo, revision)
        if repo.resolve(revision) is not None:
            raise HttpError(400, f"Invalid rev id: {revision} is not a branch")
        raise HttpError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def preupload(self, repo_id: str, revision: str, record) -> Response:
        repo = self.get_repo(repo_id, record, write=True)
        head = self.writable_head(repo, revision)
        out = []
        for item in json.loads(record.body or b"{}").get("files", []):
            path = validate_path(item["path"])
            sample = base64.b64decode(item.get("sample") or "")
            existing = head.files.get(path)
            remote_oid = None if existing is None else existing.sha256 if existing.lfs else existing.git_oid
            mode = self.upload_mode(path, int(item.get("size", 0)), sample, head.files)
            out.append({"path": path, "uploadMode": mode, "shouldIgnore": False, "oid": remote_oid})
        return json_response({"files": out, "commitOid": head.oid})

    def lfs_batch(self, repo_id: str, record) -> Response:
        payload = json.loads(record.body or b"{}")
        if payload.get("operation") != "upload":
            raise HttpError(400, "the Hub test double accepts LFS uploads only")
        repo = self.get_repo(repo_id, record, write=True)
        objects = [self.lfs_upload_action(repo, obj.get("oid"), obj.get("size")) for obj in payload.get("objects", [])]
        return json_response({"transfer": "basic", "objects": objects, "hash_algo": "sha256"}, content_type=LFS_JSON)

    def lfs_upload_action(self, repo: Repo, oid: Any, size: Any) -> dict:
        if not isinstance(oid, str) or not re.fullmatch(r"[0-9a-f]{64}", oid) or not isinstance(size, int):
            return {"oid": str(oid), "size": int(size or 0), "error": {"code": 422, "message": "Invalid object"}}
        if oid in self.lfs_objects and len(self.lfs_objects[oid]) == size:
            return {"oid": oid, "size": size}  # already there: no action
        actions = {"upload": {"href": f"{self.url}/__fakehub__/lfs/{oid}"},
                   "verify": {"href": f"{self.repo_url(repo)}.git/info/lfs/objects/verify"}}
        return {"oid": oid, "size": size, "authenticated": True, "actions": actions}

    def lfs_put(self, oid: str, body: bytes) -> Response:
        if hashlib.sha256(body).hexdigest() != oid:
            raise HttpError(400, "Uploaded content does not match the announced sha256")
        self.lfs_objects[oid] = body
        return Response(200, b"", {"ETag": f'"{hashlib.md5(body).hexdigest()}"'})

    def lfs_verify(self, repo_id: str, record) -> Response:
        self.get_repo(repo_id, record, write=True)
        payload = json.loads(record.body or b"{}")
        data = self.lfs_objects.get(payload.get("oid"))
        if data is None or len(data) != payload.get("size"):
            raise HttpError(404, "Object not found")
        return json_response({}, content_type=LFS_JSON)

    def commit_endpoint(self, repo_id: str, revision: str, record) -> Response:
        lines = parse_ndjson(record.body)
        self.decoded_commit_contents.extend(inline_payloads(lines))  # even for commits that fail: leak checks see them
        repo = self.get_repo(repo_id, record, write=True)
        if self.fail_next_commit:
            self.fail_next_commit = int(self.fail_next_commit) - 1
            raise HttpError(500, "Internal Error - injected commit failure")
        if not lines or lines[0].get("key") != "header":
            raise HttpError(400, "The first line of the payload must be the header")
        header = lines[0].get("value") or {}
        title = header.get("summary") or ""
        if not title.strip():
            raise HttpError(400, "Commit summary is required")
        head = self.writable_head(repo, revision)
        self.check_parent(repo, head, header.get("parentCommit"))
        files = dict(head.files)
        for line in lines[1:]:
            self.apply_operation(files, line.get("key"), line.get("value") or {})
        commit = self.add_commit(repo, revision, head.oid, files, title, header.get("description") or "")
        return json_response({"success": True, "commitOid": commit.oid, "commitUrl": f"{self.repo_url(repo)}/commit/{commit.oid}",
                              "hookOutput": "", "pullRequestUrl": None})

    def check_parent(self, repo: Repo, head: Commit, parent_commit: str | None) -> None:
        if not parent_commit:
            return
        parent_oid = repo.resolve(parent_commit)
        if parent_oid is None:
            raise HttpError(404, f"Invalid rev id: {parent_commit}", "RevisionNotFound")
        if parent_oid != head.oid:
            raise HttpError(412, "A commit has happened since. Please refresh and try again.")

    def apply_operation(self, files: dict[str, Blob], key: str | None, value: dict) -> None:
        if key == "file":
            path = validate_path(value.get("path"))
            content = value.get("content", "")
            data = base64.b64decode(content) if value.get("encoding") == "base64" else str(content).encode()
            if len(data) > MAX_REGULAR_FILE_SIZE:
                raise HttpError(400, f"Your push was rejected because it contains files larger than 10 MiB ({path}). Use LFS.")
            files[path] = Blob.regular(data)
        elif key == "lfsFile":
            path, oid = validate_path(value.get("path")), value.get("oid")
            data = self.lfs_objects.get(oid)
            if value.get("algo", "sha256") != "sha256" or data is None:
                raise HttpError(400, f"LFS object {oid} was not uploaded (path {path})")
            if value.get("size") is not None and int(value["size"]) != len(data):
                raise HttpError(400, f"Size mismatch for LFS object {oid} (path {path})")
            files[path] = Blob.large(data)
        elif key == "deletedFile":
            if value.get("path") not in files:
                raise HttpError(404, f"A file with this name doesn't exist: {value.get('path')}", "EntryNotFound")
            del files[value["path"]]
        else:
            raise HttpError(400, f"Unknown operation key {key!r}")
