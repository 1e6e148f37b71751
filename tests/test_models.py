"""sclora_tools/models.py resolving a Hub id: calibrate reads a model from the Hub by id@revision (through
the Hub test double on 127.0.0.1) and records the resolved commit."""

from __future__ import annotations

import pytest
from huggingface_hub import HfApi

from sclora_tools import calibrate, init
from sclora_tools.errors import InputError


def test_calibrate_resolves_a_hub_id_at_a_revision(fake_hub, tiny_fp32, data_files, tmp_path):
    api = HfApi(endpoint=fake_hub.url, token=fake_hub.token)
    api.create_repo("org/tiny")
    first = api.upload_folder(folder_path=str(tiny_fp32), repo_id="org/tiny").oid
    api.upload_file(path_or_fileobj=b"# later change\n", path_in_repo="NOTES.md", repo_id="org/tiny")
    manifest = calibrate(f"org/tiny@{first}", str(data_files["pos"]), str(data_files["neg"]), tmp_path / "c",
                         samples=8, max_length=32, progress=False)
    assert manifest["model"]["id"] == "org/tiny"
    assert manifest["model"]["revision"] == first
    assert set(manifest["model"]["weight_files"]) == {"model.safetensors"}
    run = init(tmp_path / "c", tmp_path / "r", rank=4, progress=False)
    assert run["model"]["revision"] == first


def test_a_missing_hub_model_is_one_clear_error(fake_hub, data_files, tmp_path):
    with pytest.raises(InputError, match="cannot fetch model"):
        calibrate("org/absent", str(data_files["pos"]), str(data_files["neg"]), tmp_path / "c", progress=False)
    assert not (tmp_path / "c").exists()
