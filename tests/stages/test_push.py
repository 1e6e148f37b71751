"""`sclora push` against the Hub test double (tests/hubdouble/, real huggingface_hub client): round
trips that load back with the same logits, one commit or none, the token nowhere, clean failures,
refusals, dry run and local folder, and local paths hidden in what is published."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import huggingface_hub.constants as constants
import pytest
import torch
from huggingface_hub import ModelCard, hf_api
from peft import PeftModel
from transformers import AutoModelForCausalLM

import sclora_tools.io.hub as hub
from sclora_tools import push
from sclora_tools.cli.app import app
from sclora_tools.errors import InputError, RemoteError, UsageError, VerificationError
from sclora_tools.io.local_paths import hide_in
from tests.chain import fresh_copy
from tests.documents import result_of
from tests.publishing import LORA_FILES, MERGED_FILES, REPO, edit_manifest, hub_style
from tests.tiny import logits


def one_error_line(result) -> str:
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    return lines[0]


def test_push_all_round_trips_to_the_same_logits(merged_run, fake_hub, tiny_fp32, sample_ids, tmp_path):
    record = push(merged_run, REPO, progress=False)
    assert record["changed"] and record["verified"] and record["mode"] == "hub"
    commits = fake_hub.commits(REPO)
    assert len(commits) == 2 and record["commit"] == commits[-1].oid == fake_hub.head(REPO)
    files = fake_hub.files(REPO)
    expected = {".gitattributes", "README.md", "sclora_manifest.json", *MERGED_FILES, *(f"lora/{n}" for n in LORA_FILES)}
    assert set(files) == expected
    for name in MERGED_FILES:
        assert files[name] == (merged_run / "merged" / name).read_bytes(), name
    for name in LORA_FILES:
        assert files[f"lora/{name}"] == (merged_run / "lora" / name).read_bytes(), name
    assert json.loads(files["sclora_manifest.json"]) == hide_in(json.loads((merged_run / "manifest.json").read_text()))
    assert fake_hub.file_entries(REPO)["model.safetensors"].lfs  # weights went through LFS
    assert {f["path"] for f in record["files"]} == expected - {".gitattributes"}

    ids, mask = sample_ids
    local = AutoModelForCausalLM.from_pretrained(merged_run / "merged", dtype=torch.float32)
    remote = AutoModelForCausalLM.from_pretrained(REPO, dtype=torch.float32, cache_dir=tmp_path / "cache")
    reference = logits(local, ids, mask)
    assert torch.equal(logits(remote, ids, mask), reference)
    base = AutoModelForCausalLM.from_pretrained(tiny_fp32, dtype=torch.float32)
    assert (logits(base, ids, mask) - reference).abs().max().item() > 1e-3  # training moved the model
    on_base = PeftModel.from_pretrained(base, REPO, subfolder="lora", cache_dir=tmp_path / "cache")
    assert (logits(on_base, ids, mask) - reference).abs().max().item() <= 1e-4


def test_push_lora_loads_with_peft_on_the_original_base(merged_run, fake_hub, tiny_fp32, sample_ids, tmp_path):
    repo = "fake-org/tiny-lora"
    push(merged_run, repo, what="lora", progress=False)
    files = fake_hub.files(repo)
    assert set(files) == {".gitattributes", "README.md", "sclora_manifest.json", *LORA_FILES}
    ids, mask = sample_ids
    reference = logits(AutoModelForCausalLM.from_pretrained(merged_run / "merged", dtype=torch.float32), ids, mask)
    base = AutoModelForCausalLM.from_pretrained(tiny_fp32, dtype=torch.float32)
    on_base = PeftModel.from_pretrained(base, repo, cache_dir=tmp_path / "cache")
    assert (logits(on_base, ids, mask) - reference).abs().max().item() <= 1e-4
    card = ModelCard(files["README.md"].decode())
    assert card.data.library_name == "peft"
    assert "PeftModel.from_pretrained(base, 'fake-org/tiny-lora')" in card.text


def test_push_merged_only(merged_run, fake_hub):
    push(merged_run, "fake-org/tiny-merged", what="merged", progress=False)
    assert set(fake_hub.files("fake-org/tiny-merged")) == {".gitattributes", "README.md", "sclora_manifest.json", *MERGED_FILES}


def test_the_token_appears_in_no_uploaded_byte_and_no_output(merged_run, fake_hub, runner):
    token = fake_hub.token
    result = runner.invoke(app, ["push", str(merged_run), "--repo-id", "fake-org/leak"], env={"SCLORA_QUIET": "0"})
    assert result.exit_code == 0, result.output
    assert "sclora push" in result.stderr  # the summary was printed
    as_json = runner.invoke(app, ["push", str(merged_run), "--repo-id", "fake-org/leak", "--json"])
    assert as_json.exit_code == 0, as_json.output
    assert result_of(as_json.stdout, "push")["changed"] is False  # identical second push: no new commit
    for output in (result.output, result.stderr, as_json.output, as_json.stderr):
        assert token not in output
    assert f"Bearer {token}" in fake_hub.auth_headers()  # it was used, in the header only
    assert fake_hub.find_leaks(token) == []
    assert token.encode() not in fake_hub.all_uploaded_bytes()
    assert all(token.encode() not in content for content in fake_hub.files("fake-org/leak").values())


def test_a_failed_commit_is_one_clear_error_and_publishes_nothing(merged_run, fake_hub, runner):
    fake_hub.fail_next_commit = True
    result = runner.invoke(app, ["push", str(merged_run), "--repo-id", "fake-org/broken"])
    assert result.exit_code == RemoteError.exit_code == 7
    message = " ".join(one_error_line(result).split())
    assert "HTTP 500" in message and "nothing was published" in message and "fake-org/broken" in message
    assert fake_hub.token not in result.output
    assert set(fake_hub.files("fake-org/broken")) == {".gitattributes"}
    assert len(fake_hub.commits("fake-org/broken")) == 1  # only the Hub's initial commit
    fake_hub.fail_next_commit = True
    with pytest.raises(RemoteError, match="HTTP 500"):
        push(merged_run, "fake-org/broken", progress=False)
    assert set(fake_hub.files("fake-org/broken")) == {".gitattributes"}


def test_no_token_is_a_clear_error_before_any_request(merged_run, fake_hub, monkeypatch):
    monkeypatch.delenv("HF_TOKEN")
    with pytest.raises(RemoteError, match="HF_TOKEN.*hf auth login"):
        push(merged_run, REPO, progress=False)
    assert fake_hub.requests == []


def test_private_push_to_an_existing_public_repo_is_refused(merged_run, fake_hub):
    fake_hub.create_repo("fake-org/public")
    with pytest.raises(UsageError, match="public"):
        push(merged_run, "fake-org/public", private=True, progress=False)
    assert len(fake_hub.commits("fake-org/public")) == 1
    push(merged_run, "fake-org/secret", private=True, progress=False)
    assert fake_hub.repo("fake-org/secret").private


@pytest.mark.parametrize("damage", ["failed", "missing", "tensor"])
def test_refuses_a_merge_whose_verification_failed(merged_run, fake_hub, tmp_path, damage):
    run = fresh_copy(merged_run, tmp_path, "merge-copy")

    def change(manifest):
        if damage == "failed":
            manifest["verification"]["passed"] = False
        elif damage == "missing":
            del manifest["verification"]
        else:
            next(iter(manifest["verification"]["tensors"].values()))["ok"] = False

    edit_manifest(run, change)
    with pytest.raises(VerificationError, match="W0|verification"):
        push(run, REPO, progress=False)
    assert fake_hub.requests == [] and not fake_hub.has_repo(REPO)


@pytest.mark.parametrize("target", ["merged/model.safetensors", "lora/adapter_config.json", "merged/tokenizer.json"])
def test_refuses_a_tampered_file(merged_run, fake_hub, runner, tmp_path, target):
    run = fresh_copy(merged_run, tmp_path, "merge-copy")
    with open(run / target, "ab") as handle:
        handle.write(b"\0")
    result = runner.invoke(app, ["push", str(run), "--repo-id", REPO])
    assert result.exit_code == VerificationError.exit_code
    assert Path(target).name in one_error_line(result)
    assert fake_hub.requests == []


def test_refuses_a_file_added_after_the_merge(merged_run, fake_hub, tmp_path):
    run = fresh_copy(merged_run, tmp_path, "merge-copy")
    (run / "lora" / "extra.safetensors").write_bytes(b"\0" * 8)
    with pytest.raises(VerificationError, match="extra.safetensors"):
        push(run, REPO, progress=False)
    assert fake_hub.requests == []


@pytest.mark.parametrize("args,phrase", [(["--what", "bogus"], "--what"), (["--commit-message", " "], "--commit-message"),
                                         (["--dry-run", "--to", "x"], "--dry-run")])
def test_bad_options(merged_run, fake_hub, runner, args, phrase):
    result = runner.invoke(app, ["push", str(merged_run), "--repo-id", REPO, *args])
    assert result.exit_code == UsageError.exit_code
    assert phrase in one_error_line(result)
    bad_id = runner.invoke(app, ["push", str(merged_run), "--repo-id", "no-namespace"])
    assert bad_id.exit_code == UsageError.exit_code and "ORG/NAME" in one_error_line(bad_id)
    assert fake_hub.requests == []


def test_a_directory_that_is_not_a_merge(fake_hub, runner, tmp_path):
    result = runner.invoke(app, ["push", str(tmp_path / "absent"), "--repo-id", REPO])
    assert result.exit_code == InputError.exit_code and "absent" in one_error_line(result)
    assert fake_hub.requests == []


def test_dry_run_makes_no_request_at_all(merged_run, fake_hub, runner, monkeypatch):
    record = push(merged_run, REPO, dry_run=True, progress=False)
    assert record["mode"] == "dry-run" and record["card"].startswith("---\n")
    assert {f["path"] for f in record["files"]} >= {"README.md", "model.safetensors", "lora/adapter_model.safetensors"}
    assert record["bytes"] == sum(f["size"] for f in record["files"]) > 0
    monkeypatch.delenv("HF_TOKEN")  # no token needed either
    result = runner.invoke(app, ["push", str(merged_run), "--repo-id", REPO, "--dry-run"])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("---\n") and "## How to load" in result.stdout  # the card
    assert fake_hub.requests == [] and not fake_hub.has_repo(REPO)


def test_to_writes_the_publishable_folder_locally(merged_run, fake_hub, tiny_fp32, sample_ids, tmp_path):
    out = tmp_path / "publish"
    record = push(merged_run, REPO, to=out, progress=False)
    assert record["mode"] == "local" and record["output"] == str(out)
    written = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert written == {f["path"] for f in record["files"]}
    assert ModelCard.load(out / "README.md").data.to_dict()["sclora"]["beta"] == 0.9
    ids, mask = sample_ids
    reference = logits(AutoModelForCausalLM.from_pretrained(merged_run / "merged", dtype=torch.float32), ids, mask)
    assert torch.equal(logits(AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32), ids, mask), reference)
    on_base = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_fp32, dtype=torch.float32), out / "lora")
    assert (logits(on_base, ids, mask) - reference).abs().max().item() <= 1e-4
    push(merged_run, REPO, to=out, what="lora", progress=False)  # re-running replaces its own earlier output
    assert (out / "adapter_config.json").is_file() and not (out / "model.safetensors").exists()
    assert not list(tmp_path.glob(".publish.*"))
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("precious")
    with pytest.raises(InputError, match="not an sclora artefact"):
        push(merged_run, REPO, to=foreign, progress=False)
    with pytest.raises(UsageError, match="overlaps"):
        push(merged_run, REPO, to=merged_run / "publish", progress=False)
    assert (foreign / "notes.txt").read_text() == "precious" and not (merged_run / "publish").exists()
    assert fake_hub.requests == []


def test_identical_second_push_makes_no_commit(merged_run, fake_hub):
    first = push(merged_run, REPO, progress=False)
    second = push(merged_run, REPO, progress=False)
    assert first["changed"] and not second["changed"] and second["commit"] == first["commit"]
    assert len(fake_hub.commits(REPO)) == 2


def test_revision_pushes_to_a_new_branch(merged_run, fake_hub):
    record = push(merged_run, REPO, revision="v1", commit_message="First release\n\nbeta 0.9, rank 4", progress=False)
    assert set(fake_hub.branches(REPO)) == {"main", "v1"}
    assert set(fake_hub.files(REPO, "main")) == {".gitattributes"}
    assert "README.md" in fake_hub.files(REPO, "v1") and record["revision"] == "v1"
    commit = fake_hub.commit(REPO, "v1")
    assert commit.title == "First release" and "beta 0.9" in commit.message


def test_stale_weights_of_an_earlier_upload_are_removed_in_the_same_commit(merged_run, fake_hub):
    fake_hub.create_repo("fake-org/stale", files={"model-00001-of-00002.safetensors": b"\0old", "model.safetensors.index.json": b"{}",
                                                  "lora/old.safetensors": b"\0old", "notes.md": b"keep me"})
    record = push(merged_run, "fake-org/stale", progress=False)
    files = fake_hub.files("fake-org/stale")
    assert "model-00001-of-00002.safetensors" not in files and "model.safetensors.index.json" not in files
    assert "lora/old.safetensors" not in files and files["notes.md"] == b"keep me"
    assert sorted(record["deleted"]) == ["lora/old.safetensors", "model-00001-of-00002.safetensors", "model.safetensors.index.json"]
    assert len(fake_hub.commits("fake-org/stale")) == 3  # initial, the seeded files, one push


def test_hf_endpoint_is_read_at_push_time_not_at_import(merged_run, fake_hub, monkeypatch):
    """huggingface_hub captured the endpoint at import (constants, the module-level HfApi): push must
    not use those stale values."""
    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(hf_api.api, "endpoint", "http://127.0.0.1:9")
    record = push(merged_run, "fake-org/endpoint", progress=False)
    assert record["endpoint"] == fake_hub.url and record["url"] == f"{fake_hub.url}/fake-org/endpoint"
    assert "README.md" in fake_hub.files("fake-org/endpoint")


def test_a_remote_file_that_differs_after_the_commit_is_a_clear_error(merged_run, fake_hub, monkeypatch):
    real, seen = hub.remote_files, []

    def listing(api, repo_id, revision):
        entries = real(api, repo_id, revision)
        seen.append(revision)
        if len(seen) == 2:  # the listing of the new commit
            entry = entries["config.json"]
            entries["config.json"] = SimpleNamespace(path=entry.path, size=entry.size + 1, blob_id=entry.blob_id, lfs=None)
        return entries

    monkeypatch.setattr(hub, "remote_files", listing)
    with pytest.raises(RemoteError, match="config.json.*push again"):
        push(merged_run, REPO, progress=False)


def test_a_token_typed_into_a_recorded_string_is_redacted(merged_run, fake_hub, tmp_path):
    run = fresh_copy(merged_run, tmp_path, "merge-copy")
    edit_manifest(run, lambda m: m["datasets"][0].update(name=f"data-{fake_hub.token}"))
    push(run, REPO, progress=False)
    files = fake_hub.files(REPO)
    assert fake_hub.find_leaks(fake_hub.token) == []
    assert b"data-[redacted]" in files["README.md"] and b"data-[redacted]" in files["sclora_manifest.json"]


def test_offline_mode_refuses_to_upload_but_dry_run_and_to_work(merged_run, fake_hub, monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UsageError, match="HF_HUB_OFFLINE"):
        push(merged_run, REPO, progress=False)
    push(merged_run, REPO, dry_run=True, progress=False)
    push(merged_run, REPO, to=tmp_path / "publish", progress=False)
    assert fake_hub.requests == []


def test_local_paths_are_hidden_in_every_published_text_unless_kept(merged_run, tiny_fp32, data_files, tmp_path):
    run = hub_style(fresh_copy(merged_run, tmp_path, "merge-copy"), tmp_path)
    edit_manifest(run, lambda m: m["model"].update(id=str(tiny_fp32), spec=str(tiny_fp32), revision=None, path=str(tiny_fp32)))
    push(run, REPO, to=tmp_path / "hidden", progress=False)
    texts = {name: (tmp_path / "hidden" / name).read_text() for name in ("README.md", "sclora_manifest.json", "sclora_eval.json")}
    local = [str(tmp_path), str(tiny_fp32.parent), str(data_files["pos"].parent), str(Path.home())]
    assert not [(name, root) for name, text in texts.items() for root in local if root in text]
    card = ModelCard.load(tmp_path / "hidden" / "README.md")
    assert f"from_pretrained('<local>/{tiny_fp32.name}')" in card.text and "\\<local\\>/pos.jsonl" in card.text
    assert card.data.to_dict()["sclora"]["calibration"][1]["source"] == "<local>/neg.jsonl"
    assert "fake-org/dialogs" in card.data.to_dict()["datasets"]  # Hub ids are not paths
    assert json.loads(texts["sclora_manifest.json"])["verification"] == json.loads((run / "manifest.json").read_text())["verification"]
    push(run, REPO, to=tmp_path / "kept", keep_local_paths=True, progress=False)
    assert (tmp_path / "kept" / "sclora_manifest.json").read_bytes() == (run / "manifest.json").read_bytes()
    assert str(data_files["pos"]) in (tmp_path / "kept" / "README.md").read_text()
