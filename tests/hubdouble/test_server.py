"""The FakeHubServer test double, exercised with the REAL huggingface_hub client (and transformers):
the parts of the Hub protocol that sclora's push and Hub model downloads rely on.

Everything runs against http://127.0.0.1:<port>; no other address is contacted.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import subprocess
import sys

import huggingface_hub
import pytest
import torch
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    constants,
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
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from tests.hubdouble import FAKE_HF_TOKEN

REPO = "fake-org/tiny-model"
BIG_SIZE = 11 * 1024 * 1024  # > 10 MB => LFS by size, whatever the extension


def _safetensors_bytes(size: int) -> bytes:
    """A valid-looking safetensors file of exactly `size` bytes (header + one uint8 tensor)."""
    for pad in range(8):
        n = size - 8 - 100 - pad
        header = json.dumps({"w": {"dtype": "U8", "shape": [n], "data_offsets": [0, n]}}).encode()
        header += b" " * (100 + pad - len(header)) if len(header) <= 100 + pad else b""
        if 8 + len(header) + n == size:
            return struct.pack("<Q", len(header)) + header + os.urandom(n)
    raise AssertionError("could not build payload")


@pytest.fixture(scope="module")
def big_weights() -> bytes:
    return _safetensors_bytes(BIG_SIZE)


def _three_files(big: bytes) -> dict[str, bytes]:
    return {
        "config.json": json.dumps({"model_type": "llama", "hidden_size": 8}).encode(),
        "README.md": b"---\nlicense: apache-2.0\ntags:\n- sclora\n---\n\n# tiny model\n",
        "model.safetensors": big,
    }


def _upload(api: HfApi, repo_id: str, files: dict[str, bytes], message: str = "Upload model", **kwargs):
    ops = [CommitOperationAdd(path_in_repo=path, path_or_fileobj=data) for path, data in files.items()]
    return api.create_commit(repo_id, ops, commit_message=message, **kwargs)


# ----------------------------------------------------------------------------------------------------------------
# Repo creation / account
# ----------------------------------------------------------------------------------------------------------------


def test_fixture_points_client_at_fake_hub(fake_hub):
    assert fake_hub.url.startswith("http://127.0.0.1:")
    assert os.environ["HF_ENDPOINT"] == fake_hub.url
    assert constants.ENDPOINT == fake_hub.url
    assert constants.HF_HUB_DISABLE_XET is True and constants.HF_HUB_OFFLINE is False
    assert HfApi().endpoint == fake_hub.url
    assert huggingface_hub.hf_api.api.endpoint == fake_hub.url  # module-level functions
    assert hf_hub_url(REPO, "config.json").startswith(fake_hub.url + "/")
    assert huggingface_hub.get_token() == FAKE_HF_TOKEN == fake_hub.token


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


# ----------------------------------------------------------------------------------------------------------------
# One commit with regular + LFS files, then every read path
# ----------------------------------------------------------------------------------------------------------------


def test_single_commit_regular_and_lfs_files(fake_hub, big_weights, tmp_path):
    api = HfApi()
    api.create_repo(REPO)
    files = _three_files(big_weights)
    n_requests_before = len(fake_hub.requests)

    info = _upload(api, REPO, files)

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


# ----------------------------------------------------------------------------------------------------------------
# Failures, errors, atomicity
# ----------------------------------------------------------------------------------------------------------------


def test_failing_commit_raises_and_leaves_repo_unchanged(fake_hub, big_weights):
    api = HfApi()
    api.create_repo(REPO)
    before_files = fake_hub.files(REPO)
    before_head = fake_hub.head(REPO)

    fake_hub.fail_next_commit = True
    with pytest.raises(HfHubHTTPError) as exc:
        _upload(api, REPO, _three_files(big_weights))
    assert exc.value.response.status_code == 500
    assert fake_hub.files(REPO) == before_files == {".gitattributes": before_files[".gitattributes"]}
    assert fake_hub.head(REPO) == before_head and len(fake_hub.commits(REPO)) == 1
    assert api.list_repo_files(REPO) == [".gitattributes"]

    # The failure was one-shot: retrying succeeds (the LFS object is already there => no second PUT).
    _upload(api, REPO, _three_files(big_weights))
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
        _upload(api, "fake-org/missing", {"a.txt": b"a"})


def test_non_loopback_network_is_blocked(fake_hub):
    # A client that would bypass the patches (explicit public endpoint) cannot reach the outside world.
    with pytest.raises(Exception):  # noqa: B017 - whichever error the client raises for an unreachable host
        HfApi(endpoint="https://huggingface.co").model_info("gpt2")
    assert fake_hub.blocked_hosts == ["huggingface.co"]
    fake_hub.blocked_hosts.clear()  # expected here; otherwise the fixture fails the test at teardown


def test_private_repo_needs_the_token(fake_hub, tmp_path):
    api = HfApi()
    api.create_repo(REPO, private=True)
    _upload(api, REPO, {"config.json": b"{}"})
    assert api.model_info(REPO).private is True
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download(REPO, "config.json", cache_dir=tmp_path, token=False)
    assert hf_hub_download(REPO, "config.json", cache_dir=tmp_path)  # implicit HF_TOKEN


def test_wrong_token_is_rejected(fake_hub):
    with pytest.raises(HfHubHTTPError) as exc:
        HfApi(token="hf_wrong").create_repo(REPO)
    assert exc.value.response.status_code == 401
    assert not fake_hub.has_repo(REPO)


# ----------------------------------------------------------------------------------------------------------------
# Revisions: branches, parent commit, no-op commits
# ----------------------------------------------------------------------------------------------------------------


def test_branches_and_revisions(fake_hub, tmp_path):
    api = HfApi()
    api.create_repo(REPO)
    _upload(api, REPO, {"a.txt": b"main-a"})
    api.create_branch(REPO, branch="dev")
    api.create_branch(REPO, branch="dev", exist_ok=True)
    _upload(api, REPO, {"a.txt": b"dev-a", "b.txt": b"dev-b"}, revision="dev")

    assert fake_hub.files(REPO)["a.txt"] == b"main-a" and "b.txt" not in fake_hub.files(REPO)
    assert fake_hub.files(REPO, "dev")["a.txt"] == b"dev-a"
    assert sorted(api.list_repo_files(REPO, revision="dev")) == [".gitattributes", "a.txt", "b.txt"]
    assert set(fake_hub.branches(REPO)) == {"main", "dev"}
    with open(hf_hub_download(REPO, "a.txt", revision="dev", cache_dir=tmp_path), "rb") as f:
        assert f.read() == b"dev-a"

    # Committing to a branch that does not exist fails like on the Hub.
    with pytest.raises(RevisionNotFoundError):
        _upload(api, REPO, {"c.txt": b"c"}, revision="nope")


def test_stale_parent_commit_is_refused(fake_hub):
    api = HfApi()
    api.create_repo(REPO)
    first = _upload(api, REPO, {"a.txt": b"1"})
    _upload(api, REPO, {"a.txt": b"2"})
    with pytest.raises(HfHubHTTPError) as exc:
        _upload(api, REPO, {"a.txt": b"3"}, parent_commit=first.oid)
    assert exc.value.response.status_code == 412
    assert fake_hub.files(REPO)["a.txt"] == b"2"


def test_unchanged_files_are_not_recommitted(fake_hub, big_weights):
    api = HfApi()
    api.create_repo(REPO)
    files = _three_files(big_weights)
    _upload(api, REPO, files)
    n_commits = len(fake_hub.commits(REPO))
    # preupload reports the remote oids => the client drops the no-op commit entirely
    _upload(api, REPO, files)
    assert len(fake_hub.commits(REPO)) == n_commits
    assert len(fake_hub.requests_to(r"/commit/", method="POST")) == 1


# ----------------------------------------------------------------------------------------------------------------
# Auth: the token travels as a header, never in bytes
# ----------------------------------------------------------------------------------------------------------------


def test_token_sent_as_header_but_never_in_uploaded_bytes(fake_hub, big_weights, tmp_path):
    api = HfApi()
    api.create_repo(REPO)
    _upload(api, REPO, _three_files(big_weights))
    hf_hub_download(REPO, "config.json", cache_dir=tmp_path)

    bearer = f"Bearer {FAKE_HF_TOKEN}"
    headers = fake_hub.auth_headers()
    assert bearer in headers
    # every Hub API / git call carried the token; the LFS PUT (a pre-signed URL on the real Hub) did not
    for record in fake_hub.requests:
        if record.path.startswith("/__fakehub__/"):
            assert record.authorization is None
        else:
            assert record.authorization == bearer, record.path
    assert FAKE_HF_TOKEN.encode() not in fake_hub.all_uploaded_bytes()
    assert fake_hub.find_leaks(FAKE_HF_TOKEN) == []


def test_leak_detector_sees_tokens_inside_committed_files(fake_hub):
    # Sanity check of the check above: a token written into an uploaded (base64-encoded) file is caught.
    api = HfApi()
    api.create_repo(REPO)
    _upload(api, REPO, {"oops.json": json.dumps({"token": FAKE_HF_TOKEN}).encode()})
    assert FAKE_HF_TOKEN.encode() in fake_hub.all_uploaded_bytes()
    assert fake_hub.find_leaks(FAKE_HF_TOKEN) == ["content of a committed file"]


# ----------------------------------------------------------------------------------------------------------------
# Unicode paths, subprocesses
# ----------------------------------------------------------------------------------------------------------------


def test_unicode_paths(fake_hub, tmp_path):
    api = HfApi()
    api.create_repo(REPO)
    _upload(api, REPO, {"données/été #1.txt": "héhé".encode()})
    assert fake_hub.files(REPO)["données/été #1.txt"] == "héhé".encode()
    with open(hf_hub_download(REPO, "données/été #1.txt", cache_dir=tmp_path), "rb") as f:
        assert f.read() == "héhé".encode()
    assert "données/été #1.txt" in api.list_repo_files(REPO)


def test_subprocess_sees_the_fake_hub_through_env_vars(fake_hub):
    # What a CLI test (`sclora push` run as a subprocess) relies on: the env vars alone are enough there.
    fake_hub.create_repo(REPO, files={"config.json": b"{}"})
    code = (
        "from huggingface_hub import HfApi, constants;"
        f"print(constants.ENDPOINT, constants.HF_HUB_DISABLE_XET, sorted(HfApi().list_repo_files({REPO!r})))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.split() == [fake_hub.url, "True", "['.gitattributes',", "'config.json']"]
    assert f"Bearer {FAKE_HF_TOKEN}" in fake_hub.auth_headers()


# ----------------------------------------------------------------------------------------------------------------
# transformers end to end
# ----------------------------------------------------------------------------------------------------------------


def test_transformers_from_pretrained_roundtrip(fake_hub, tmp_path):
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=128,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    model = LlamaForCausalLM(config).eval()
    local_dir = tmp_path / "saved"
    model.save_pretrained(local_dir)

    api = HfApi()
    repo_id = "fake-org/tiny-llama"
    api.create_repo(repo_id)
    ops = [
        CommitOperationAdd(path_in_repo=p.name, path_or_fileobj=str(p))
        for p in sorted(local_dir.iterdir())
        if p.is_file()
    ]
    api.create_commit(repo_id, ops, commit_message="Add tiny llama")
    assert len(fake_hub.commits(repo_id)) == 2
    assert fake_hub.file_entries(repo_id)["model.safetensors"].lfs  # binary => LFS even though small

    loaded = AutoModelForCausalLM.from_pretrained(repo_id, cache_dir=tmp_path / "fresh-cache")
    expected, got = model.state_dict(), loaded.state_dict()
    assert expected.keys() == got.keys()
    for name, tensor in expected.items():
        assert torch.equal(tensor, got[name].to(tensor.dtype)), name
    assert fake_hub.unhandled == []
    # transformers only used /resolve (HEAD + GET) and maybe the API; never another host
    assert all(r.host.startswith("127.0.0.1:") for r in fake_hub.requests)
