"""`sclora push` against the Hub test double (tests/hub_server.py, real huggingface_hub client):
round trips that load back with the same logits, a card that says how the model was made, one
commit or none, the token nowhere, clean failures, refusals, dry run and local folder."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import torch
from huggingface_hub import ModelCard, hf_hub_download
from peft import PeftModel
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

from sclora_tools import calibrate, init, merge, push, train
from sclora_tools.cli.app import app
from sclora_tools.errors import InputError, RemoteError, UsageError, VerificationError
from sclora_tools.io.card import render_card
from sclora_tools.io.local_paths import hide_in

REPO = "fake-org/tiny-sclora"
MERGED_FILES = {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja"}
LORA_FILES = {"adapter_config.json", "adapter_model.safetensors"}
NASTY = "evil\n---\nlicense: mit\nbase_model: attacker/model\n{{ config }} {% raw %} \"q\" 'a' | `x` ```\n- [a](javascript:b) <b>"


# ----------------------------------------------------------------------------- fixtures and helpers


@pytest.fixture(scope="module")
def merged_run(tiny_fp32, data_files, tmp_path_factory) -> Path:
    """calibrate -> init (beta 0.9, r 4) -> train (2 steps) -> merge of tiny_fp32, built once."""
    root = tmp_path_factory.mktemp("push-run")
    calibrate(str(tiny_fp32), str(data_files["pos"]), str(data_files["neg"]), root / "calib",
              samples=8, max_length=24, batch_size=8, progress=False)
    init(root / "calib", root / "run", beta=0.9, rank=4, progress=False)
    train(root / "run", root / "trained", data_argument=str(data_files["pos"]), samples=8, max_steps=2, lr=5e-3, batch_size=4,
          max_length=48, progress=False)
    merge(root / "trained", root / "out", progress=False)
    return root / "out"


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


def copy_run(merged_run: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "merge-copy"
    shutil.copytree(merged_run, copy)
    return copy


def edit_manifest(run: Path, change) -> dict:
    path = run / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest, indent=2))
    return manifest


def logits(model, ids, mask) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits.float()


def hub_style(run: Path, tmp_path: Path) -> Path:
    """The run as if its base came from the Hub (id + revision), one calibration set were a Hub
    dataset, the base declared a license, and `sclora eval` had written its report."""
    base_card = tmp_path / "base-with-card"
    base_card.mkdir()
    (base_card / "README.md").write_text("---\nlicense: mit\n---\n# base\n")

    def change(manifest):
        manifest["model"].update(id="fake-org/tiny-base", spec="fake-org/tiny-base", revision="c0ffee" * 6 + "c0ff",
                                 path=str(base_card))
        manifest["datasets"][0].update(kind="hub", name="fake-org/dialogs@v1:train", source="fake-org/dialogs", revision="v1")

    edit_manifest(run, change)
    report = {"model": {"spec": str(run)}, "metrics": {"refusal_rate": 0.875, "over_refusal_rate": 0.05, "rouge1": 0.41,
                                                       "refusal_nll": 1.25, "judge_score": None},
              "sets": {"safety": {"name": "safety-heldout"}, "utility": {"name": "dialogsum-heldout"}},
              "examples": {"safety": [{"prompt": "how do i ...", "answer": "a harmful answer"}]}}
    (run / "eval.json").write_text(json.dumps(report))
    return run


def one_error_line(result) -> str:
    assert isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    return lines[0]


# ----------------------------------------------------------------------------- round trips


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


# ----------------------------------------------------------------------------- the card


def test_card_downloaded_from_the_hub_has_the_metadata(merged_run, fake_hub, tmp_path):
    run = hub_style(copy_run(merged_run, tmp_path), tmp_path)
    manifest = hide_in(json.loads((run / "manifest.json").read_text()))  # as published: no local paths
    push(run, REPO, progress=False)
    card = ModelCard.load(hf_hub_download(REPO, "README.md", cache_dir=tmp_path / "cache"))
    data = card.data.to_dict()
    assert data["base_model"] == "fake-org/tiny-base" and data["base_model_relation"] == "finetune"
    assert data["library_name"] == "transformers" and data["pipeline_tag"] == "text-generation"
    assert data["license"] == "mit"
    assert {"sclora", "sc-lora", "lora", "safety"} <= set(data["tags"])
    assert data["datasets"] == ["fake-org/dialogs"]  # local + files are described in the body, not here
    results = {m["type"]: m["value"] for m in data["model-index"][0]["results"][0]["metrics"]}
    assert results == {"refusal_rate": 0.875, "over_refusal_rate": 0.05, "rouge1": 0.41, "refusal_nll": 1.25}

    block, config = data["sclora"], manifest["config"]
    assert (block["beta"], block["rank"], block["alpha"], block["method"]) == (0.9, 4, 4.0, "sclora")
    assert block["targets"] == config["targets"] and block["normalization"] == "token"
    assert block["base"]["revision"] == manifest["model"]["revision"]
    assert [c["role"] for c in block["calibration"]] == ["+", "-"]
    for entry, recorded in zip(block["calibration"], manifest["datasets"]):
        for key in ("role", "name", "source", "revision", "split", "samples", "tokens", "texts_sha256"):
            assert entry[key] == recorded[key], key
    assert block["training"]["max_steps"] == 2 and block["training"]["lr"] == 5e-3
    assert block["training"]["datasets"][0]["role"] == "train"
    verification = manifest["verification"]
    assert block["w0_check"]["passed"] is True and block["w0_check"]["checked"] == verification["checked"]
    assert block["w0_check"]["correction_bytes"] == verification["correction_bytes"]
    assert block["lora_export"] == {"path": "lora", "rank": 8, "alpha": 8.0, "against": "original base model"}

    text = card.text
    assert manifest["model"]["revision"] in text
    for ancestor in ("calibration", "init", "train"):  # every stage's exact command, in order
        assert ancestor in text
    assert "```bash" in text and "--enable-lora" in text and "--max-lora-rank 8" in text
    assert "subfolder=\"lora\"" in text and "revision='c0ffee" in text
    assert "dCov = (1 - beta) Cov+ - beta Cov-" in text and "beta = 0.9" in text
    assert "| refusal\\_rate | 0.875 |" in text
    published_eval = json.loads(fake_hub.files(REPO)["sclora_eval.json"])
    assert published_eval["metrics"]["refusal_rate"] == 0.875 and "examples" not in published_eval


@pytest.mark.parametrize("what,relation,library", [("all", "finetune", "transformers"), ("merged", "finetune", "transformers"),
                                                   ("lora", "adapter", "peft")])
def test_card_relation_and_library_follow_what_is_published(merged_run, tmp_path, what, relation, library):
    run = hub_style(copy_run(merged_run, tmp_path), tmp_path)
    manifest = json.loads((run / "manifest.json").read_text())
    data = ModelCard(render_card(manifest, repo_id="org/name", what=what)).data.to_dict()
    assert (data["base_model"], data["base_model_relation"], data["library_name"]) == ("fake-org/tiny-base", relation, library)
    assert "license" not in data  # none given, none invented
    assert ("lora_export" in data["sclora"]) == (what != "merged")


def test_local_base_has_no_base_model_field(merged_run):
    manifest = json.loads((merged_run / "manifest.json").read_text())
    data = ModelCard(render_card(manifest, repo_id="org/name")).data.to_dict()
    assert "base_model" not in data and "base_model_relation" not in data and "datasets" not in data
    assert data["sclora"]["base"]["id"] == manifest["model"]["id"]


def test_nasty_strings_cannot_break_the_front_matter_or_the_body(merged_run, fake_hub, tmp_path):
    run = copy_run(merged_run, tmp_path)

    def change(manifest):
        for record in manifest["datasets"]:
            record.update(name=NASTY, source=NASTY, split=NASTY)
        manifest["parents"][0]["manifest"]["parents"][0]["manifest"]["command"] = "sclora init ```\n---\nlicense: mit\n```"

    manifest = edit_manifest(run, change)
    text = render_card(manifest, repo_id="org/name")
    card = ModelCard(text)
    data = card.data.to_dict()
    assert set(data) == {"library_name", "pipeline_tag", "tags", "sclora"}  # nothing injected
    assert all(entry["name"] == NASTY and entry["source"] == NASTY for entry in data["sclora"]["calibration"])
    assert "{{ config }}" in data["sclora"]["calibration"][0]["name"]  # no template ran over it
    commands = re.search(r"(?s)\n````bash\n(.*?)\n````\n", card.text)  # ``` inside needs a longer fence
    assert commands and "sclora init ```\n---\nlicense: mit\n```" in commands.group(1)  # verbatim, inert
    outside = card.text.replace(commands.group(0), "\n")
    assert not any(line.strip() == "---" for line in outside.splitlines())  # no rule, no second front matter
    assert NASTY.splitlines()[0] in outside and "<b>" not in outside and "\\<b\\>" in outside
    # and the same card through the Hub
    push(run, "fake-org/nasty", progress=False)
    remote = ModelCard(fake_hub.files("fake-org/nasty")["README.md"].decode())
    assert remote.data.to_dict() == ModelCard(render_card(hide_in(manifest), repo_id="org/name")).data.to_dict()
    assert remote.data.to_dict()["sclora"]["calibration"] == data["sclora"]["calibration"]


# ----------------------------------------------------------------------------- secrets and failures


def test_the_token_appears_in_no_uploaded_byte_and_no_output(merged_run, fake_hub, runner):
    token = fake_hub.token
    result = runner.invoke(app, ["push", str(merged_run), "--repo-id", "fake-org/leak"], env={"SCLORA_QUIET": "0"})
    assert result.exit_code == 0, result.output
    assert "sclora push" in result.stderr  # the summary was printed
    as_json = runner.invoke(app, ["push", str(merged_run), "--repo-id", "fake-org/leak", "--json"])
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout)["changed"] is False  # identical second push: no new commit
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
    run = copy_run(merged_run, tmp_path)

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
    run = copy_run(merged_run, tmp_path)
    with open(run / target, "ab") as handle:
        handle.write(b"\0")
    result = runner.invoke(app, ["push", str(run), "--repo-id", REPO])
    assert result.exit_code == VerificationError.exit_code
    assert Path(target).name in one_error_line(result)
    assert fake_hub.requests == []


def test_refuses_a_file_added_after_the_merge(merged_run, fake_hub, tmp_path):
    run = copy_run(merged_run, tmp_path)
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


# ----------------------------------------------------------------------------- dry run, local folder


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


# ----------------------------------------------------------------------------- repository state


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
    import huggingface_hub.constants as constants
    from huggingface_hub import hf_api

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(hf_api.api, "endpoint", "http://127.0.0.1:9")
    record = push(merged_run, "fake-org/endpoint", progress=False)
    assert record["endpoint"] == fake_hub.url and record["url"] == f"{fake_hub.url}/fake-org/endpoint"
    assert "README.md" in fake_hub.files("fake-org/endpoint")


def test_a_remote_file_that_differs_after_the_commit_is_a_clear_error(merged_run, fake_hub, monkeypatch):
    from types import SimpleNamespace

    import sclora_tools.io.hub as stage

    real, seen = stage.remote_files, []

    def listing(api, repo_id, revision):
        entries = real(api, repo_id, revision)
        seen.append(revision)
        if len(seen) == 2:  # the listing of the new commit
            entry = entries["config.json"]
            entries["config.json"] = SimpleNamespace(path=entry.path, size=entry.size + 1, blob_id=entry.blob_id, lfs=None)
        return entries

    monkeypatch.setattr(stage, "remote_files", listing)
    with pytest.raises(RemoteError, match="config.json.*push again"):
        push(merged_run, REPO, progress=False)


def test_a_token_typed_into_a_recorded_string_is_redacted(merged_run, fake_hub, tmp_path):
    run = copy_run(merged_run, tmp_path)
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


# ----------------------------------------------------------------------------- local paths


def test_local_paths_are_hidden_in_every_published_text_unless_kept(merged_run, tiny_fp32, data_files, tmp_path):
    run = hub_style(copy_run(merged_run, tmp_path), tmp_path)
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


@pytest.mark.parametrize("text, expected", [
    ("/home/alice/data/pos.jsonl", "<local>/pos.jsonl"),
    ("/home/al ice/my data.jsonl", "<local>/my data.jsonl"),
    ("sclora calibrate '/srv/a b/model' org/data -o ~/runs/calib/", "sclora calibrate '<local>/model' org/data -o <local>/calib"),
    ("from_pretrained('/tmp/x/base')  # (/tmp/x/base)", "from_pretrained('<local>/base')  # (<local>/base)"),
    ("--to=/srv/out", "--to=<local>/out"),
    ("knkarthick/samsum", "knkarthick/samsum"),
    ("https://example.org/a/b", "https://example.org/a/b"),
    ("data/mine.jsonl", "data/mine.jsonl"),
])
def test_hide_in_text(text, expected):
    from sclora_tools.io.local_paths import hide_in_text

    assert hide_in_text(text) == expected
