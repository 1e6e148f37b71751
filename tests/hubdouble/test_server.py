"""The FakeHubServer test double, exercised with the REAL huggingface_hub client: the parts of the Hub
protocol that sclora's push and Hub model downloads rely on (repos, commits, LFS, trees, revisions,
errors and auth). Everything runs against http://127.0.0.1:<port>."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import huggingface_hub
import pytest
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    get_hf_file_metadata,
    hf_hub_download,
    hf_hub_url,
    snapshot_download,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.hf_api import RepoFile, RepoFolder

from tests.hubdouble.payloads import BIG_SIZE, REPO, three_files, upload


def test_create_repo_and_info(fake_hub):
    api = HfApi()
    url = huggingface_hub.create_repo(REPO)  # module-level function: uses the patched `api` instance
    assert url.repo_id == REPO
    assert url.endpoint == fake_hub.url
    assert fake_hub.has_repo(REPO)

    # Already exists: 409 => HfHubHTTPError, unless exist_ok.
    with pytest.raises(HfHubHTTPError) as exc:
        api.create_repo(REPO)
    assert exc.value.response.status_code == 409
    assert api.create_repo(REPO, exist_ok=True).repo_id == REPO

    # Like the real Hub, a new repo has an initial commit holding .gitattributes.
    info = api.model_info(REPO)
    assert info.id == REPO
    assert info.sha == fake_hub.head(REPO)
    assert [s.rfilename for s in info.siblings] == [".gitattributes"]
    assert len(fake_hub.commits(REPO)) == 1
    assert api.repo_exists(REPO) and not api.repo_exists("fake-org/nope")

    # Repo without namespace goes to the token's user.
    assert api.create_repo("solo").repo_id == f"{fake_hub.user}/solo"


def test_single_commit_regular_and_lfs_files(fake_hub, big_weights, tmp_path):
    api = HfApi()
    api.create_repo(REPO)
    files = three_files(big_weights)
    n_requests_before = len(fake_hub.requests)

    info = upload(api, REPO, files)

    # Exactly ONE commit call, one new commit, containing all three files.
    assert len(fake_hub.requests_to(r"/commit/", method="POST")) == 1
    commits = fake_hub.commits(REPO)
    assert len(commits) == 2 and commits[-1].oid == info.oid == fake_hub.head(REPO)
    assert commits[-1].title == "Upload model"
    assert fake_hub.files(REPO) == {".gitattributes": fake_hub.files(REPO)[".gitattributes"], **files}

    # Only the big binary went through LFS (batch + PUT), the small text files were inlined in the NDJSON commit.
    entries = fake_hub.file_entries(REPO)
    assert entries["model.safetensors"].lfs
    assert not entries["config.json"].lfs and not entries["README.md"].lfs
    puts = fake_hub.requests_to(r"^/__fakehub__/lfs/", method="PUT")
    assert [p.path.rsplit("/", 1)[-1] for p in puts] == [hashlib.sha256(big_weights).hexdigest()]
    assert len(fake_hub.requests_to(r"\.git/info/lfs/objects/batch$")) == 1
    methods = [(r.method, r.path.split("/")[1]) for r in fake_hub.requests[n_requests_before:]]
    assert ("POST", "api") in methods

    # list_repo_files / list_repo_tree
    assert sorted(api.list_repo_files(REPO)) == [".gitattributes", "README.md", "config.json", "model.safetensors"]
    tree = {e.path: e for e in api.list_repo_tree(REPO, recursive=True)}
    assert all(isinstance(e, RepoFile) for e in tree.values())
    for path, data in files.items():
        assert tree[path].size == len(data)
    lfs = tree["model.safetensors"].lfs
    assert lfs is not None and lfs.sha256 == hashlib.sha256(big_weights).hexdigest() and lfs.size == BIG_SIZE
    assert tree["config.json"].lfs is None
    assert tree["config.json"].blob_id == hashlib.sha1(
        b"blob %d\0" % len(files["config.json"]) + files["config.json"]
    ).hexdigest()

    # model_info: siblings
    info_plain = api.model_info(REPO)
    assert info_plain.sha == info.oid
    assert {s.rfilename for s in info_plain.siblings} == set(tree)
    assert api.model_info(REPO, revision=info.oid).sha == info.oid

    # HEAD metadata the download path relies on
    meta = get_hf_file_metadata(hf_hub_url(REPO, "model.safetensors"))
    assert meta.commit_hash == info.oid
    assert meta.etag == lfs.sha256
    assert meta.size == BIG_SIZE
    meta_small = get_hf_file_metadata(hf_hub_url(REPO, "config.json"))
    assert meta_small.etag == tree["config.json"].blob_id and meta_small.size == len(files["config.json"])

    # hf_hub_download round trip, fresh cache
    for path, data in files.items():
        local = hf_hub_download(REPO, path, cache_dir=tmp_path / "cache")
        with open(local, "rb") as f:
            assert f.read() == data
    # by commit hash too
    local = hf_hub_download(REPO, "config.json", revision=info.oid, cache_dir=tmp_path / "cache2")
    with open(local, "rb") as f:
        assert f.read() == files["config.json"]

    # snapshot_download (repo_info + recursive tree + per-file downloads)
    snap = snapshot_download(REPO, cache_dir=tmp_path / "snap")
    for path, data in files.items():
        with open(os.path.join(snap, path), "rb") as f:
            assert f.read() == data

    assert fake_hub.unhandled == []


def test_nested_folders_tree_and_upload_folder(fake_hub, tmp_path):
    api = HfApi()
    api.create_repo(REPO)
    folder = tmp_path / "out"
    (folder / "adapter" / "sub").mkdir(parents=True)
    (folder / "adapter" / "adapter_config.json").write_text('{"r": 8}')
    (folder / "adapter" / "sub" / "notes.txt").write_text("hello")
    (folder / "top.txt").write_text("top")
    api.upload_folder(repo_id=REPO, folder_path=folder, commit_message="folder")
    assert len(fake_hub.commits(REPO)) == 2

    root = {e.path: e for e in api.list_repo_tree(REPO)}
    assert isinstance(root["adapter"], RepoFolder) and "adapter/adapter_config.json" not in root
    sub = {e.path for e in api.list_repo_tree(REPO, path_in_repo="adapter")}
    assert sub == {"adapter/adapter_config.json", "adapter/sub"}
    everything = {e.path for e in api.list_repo_tree(REPO, recursive=True)}
    assert {"adapter", "adapter/sub", "adapter/sub/notes.txt", "top.txt"} <= everything
    with pytest.raises(EntryNotFoundError):
        list(api.list_repo_tree(REPO, path_in_repo="nope"))

    api.delete_file("top.txt", repo_id=REPO)
    assert set(fake_hub.files(REPO)) == {".gitattributes", "adapter/adapter_config.json", "adapter/sub/notes.txt"}
    assert len(fake_hub.commits(REPO)) == 3


def test_failing_commit_raises_and_leaves_repo_unchanged(fake_hub, big_weights):
    api = HfApi()
    api.create_repo(REPO)
    before_files = fake_hub.files(REPO)
    before_head = fake_hub.head(REPO)

    fake_hub.fail_next_commit = True
    with pytest.raises(HfHubHTTPError) as exc:
        upload(api, REPO, three_files(big_weights))
    assert exc.value.response.status_code == 500
    assert fake_hub.files(REPO) == before_files == {".gitattributes": before_files[".gitattributes"]}
    assert fake_hub.head(REPO) == before_head and len(fake_hub.commits(REPO)) == 1
    assert api.list_repo_files(REPO) == [".gitattributes"]

    # The failure was one-shot: retrying succeeds (the LFS object is already there => no second PUT).
    upload(api, REPO, three_files(big_weights))
    assert set(fake_hub.files(REPO)) == {".gitattributes", "config.json", "README.md", "model.safetensors"}
    assert len(fake_hub.requests_to(r"^/__fakehub__/lfs/", method="PUT")) == 1


def test_commit_is_atomic_when_an_operation_is_invalid(fake_hub):
    api = HfApi()
    api.create_repo(REPO)
    ops = [
        CommitOperationAdd(path_in_repo="a.txt", path_or_fileobj=b"a"),
        CommitOperationDelete(path_in_repo="does-not-exist.txt"),
    ]
    with pytest.raises(EntryNotFoundError):
        api.create_commit(REPO, ops, commit_message="bad")
    assert set(fake_hub.files(REPO)) == {".gitattributes"} and len(fake_hub.commits(REPO)) == 1


def test_not_found_errors_map_to_client_exceptions(fake_hub, tmp_path):
    api = HfApi()
    fake_hub.create_repo(REPO, files={"config.json": b"{}"})
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("fake-org/missing", "config.json", cache_dir=tmp_path)
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("fake-org/missing")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(REPO, "config.json", revision="no-such-branch", cache_dir=tmp_path)
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(REPO, "missing.json", cache_dir=tmp_path)
    assert api.file_exists(REPO, "config.json") and not api.file_exists(REPO, "missing.json")
    assert not api.revision_exists(REPO, "no-such-branch")
    with pytest.raises(RepositoryNotFoundError):
        upload(api, "fake-org/missing", {"a.txt": b"a"})


def test_private_repo_needs_the_token(fake_hub, tmp_path):
    api = HfApi()
    api.create_repo(REPO, private=True)
    upload(api, REPO, {"config.json": b"{}"})
    assert api.model_info(REPO).private is True
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(REPO, "config.json", cache_dir=tmp_path, token=False)
    assert hf_hub_download(REPO, "config.json", cache_dir=tmp_path)  # implicit HF_TOKEN


def test_wrong_token_is_rejected(fake_hub):
    with pytest.raises(HfHubHTTPError) as exc:
        HfApi(token="hf_wrong").create_repo(REPO)
    assert exc.value.response.status_code == 401
    assert not fake_hub.has_repo(REPO)


def test_branches_and_revisions(fake_hub, tmp_path):
    api = HfApi()
    api.create_repo(REPO)
    upload(api, REPO, {"a.txt": b"main-a"})
    api.create_branch(REPO, branch="dev")
    api.create_branch(REPO, branch="dev", exist_ok=True)
    upload(api, REPO, {"a.txt": b"dev-a", "b.txt": b"dev-b"}, revision="dev")

    assert fake_hub.files(REPO)["a.txt"] == b"main-a" and "b.txt" not in fake_hub.files(REPO)
    assert fake_hub.files(REPO, "dev")["a.txt"] == b"dev-a"
    assert sorted(api.list_repo_files(REPO, revision="dev")) == [".gitattributes", "a.txt", "b.txt"]
    assert set(fake_hub.branches(REPO)) == {"main", "dev"}
    with open(hf_hub_download(REPO, "a.txt", revision="dev", cache_dir=tmp_path), "rb") as f:
        assert f.read() == b"dev-a"

    # Committing to a branch that does not exist fails like on the Hub.
    with pytest.raises(RevisionNotFoundError):
        upload(api, REPO, {"c.txt": b"c"}, revision="nope")


def test_stale_parent_commit_is_refused(fake_hub):
    api = HfApi()
    api.create_repo(REPO)
    first = upload(api, REPO, {"a.txt": b"1"})
    upload(api, REPO, {"a.txt": b"2"})
    with pytest.raises(HfHubHTTPError) as exc:
        upload(api, REPO, {"a.txt": b"3"}, parent_commit=first.oid)
    assert exc.value.response.status_code == 412
    assert fake_hub.files(REPO)["a.txt"] == b"2"


def test_unchanged_files_are_not_recommitted(fake_hub, big_weights):
    api = HfApi()
    api.create_repo(REPO)
    files = three_files(big_weights)
    upload(api, REPO, files)
    n_commits = len(fake_hub.commits(REPO))
    # preupload reports the remote oids => the client drops the no-op commit entirely
    upload(api, REPO, files)
    assert len(fake_hub.commits(REPO)) == n_commits
    assert len(fake_hub.requests_to(r"/commit/", method="POST")) == 1


def test_unicode_paths(fake_hub, tmp_path):
    api = HfApi()
    api.create_repo(REPO)
    upload(api, REPO, {"données/été #1.txt": "héhé".encode()})
    assert fake_hub.files(REPO)["données/été #1.txt"] == "héhé".encode()
    with open(hf_hub_download(REPO, "données/été #1.txt", cache_dir=tmp_path), "rb") as f:
        assert f.read() == "héhé".encode()
    assert "données/été #1.txt" in api.list_repo_files(REPO)


def test_dataset_repos_are_served_apart_from_model_repos(fake_hub, tmp_path):
    api = HfApi()
    url = api.create_repo(REPO, repo_type="dataset")
    assert url.repo_type == "dataset" and url.url == f"{fake_hub.url}/datasets/{REPO}"
    with pytest.raises(HfHubHTTPError, match="dataset repo"):
        api.create_repo(REPO, repo_type="dataset")
    assert not api.repo_exists(REPO)  # no model repo of that name
    files = {"README.md": b"---\nconfigs: []\n---\n", "data/train-00000-of-00001.parquet": b"PAR1" + b"\0" * 64 + b"PAR1"}
    info = upload(api, REPO, files, message="Upload dataset", repo_type="dataset")
    entries = fake_hub.file_entries(f"datasets/{REPO}")
    assert entries["data/train-00000-of-00001.parquet"].lfs and not entries["README.md"].lfs  # *.parquet is an LFS pattern
    assert api.dataset_info(REPO).sha == info.oid == fake_hub.head(f"datasets/{REPO}")
    assert sorted(api.list_repo_files(REPO, repo_type="dataset")) == sorted([".gitattributes", *files])
    folder = snapshot_download(REPO, repo_type="dataset", allow_patterns=["data/*"], cache_dir=tmp_path)
    assert os.path.basename(folder) == info.oid and os.listdir(folder) == ["data"]
    path = hf_hub_download(REPO, "README.md", repo_type="dataset", revision=info.oid, cache_dir=tmp_path)
    assert Path(path).read_bytes() == files["README.md"]
    assert fake_hub.requests_to(rf"^/datasets/{REPO}/resolve/{info.oid}/README.md$", method="GET")
    with pytest.raises(RepositoryNotFoundError):
        api.dataset_info("fake-org/absent")
