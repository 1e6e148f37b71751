"""`calibrate` on tiny Llama models: which sites it collects, padding that never counts, what the
manifest records, both normalisations, chat rows and bf16 checkpoints, and bad data refused early."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

import sclora_tools.models as models
from sclora_tools import calibrate
from sclora_tools.errors import InputError
from sclora_tools.io.covariances import open_covariances
from sclora_tools.io.manifest_types import Role


def test_shared_inputs_are_collected_once_and_down_proj_on_its_output(fp32_run):
    calibration = json.loads((fp32_run.calib / "manifest.json").read_text())
    sites = {site["key"]: site for site in calibration["config"]["sites"]}
    qkv = sites["model.layers.0.self_attn.q_proj:input"]["serves"]
    assert [name.rsplit(".", 1)[-1] for name in qkv] == ["q_proj", "k_proj", "v_proj"]
    assert [n.rsplit(".", 1)[-1] for n in sites["model.layers.0.mlp.gate_proj:input"]["serves"]] == ["gate_proj", "up_proj"]
    assert "model.layers.0.mlp.down_proj:output" in sites  # 160 -> 64: the output side is smaller
    assert len(calibration["config"]["targets"]) == 14
    with open_covariances(fp32_run.calib, Role.POS) as covariance:
        assert covariance.get("model.layers.0.mlp.down_proj:output").shape == (64, 64)
        assert covariance.get("model.layers.0.mlp.gate_proj:input").shape == (64, 64)


def test_padding_is_never_counted(tiny_fp32, data_files, tmp_path):
    calibrate(str(tiny_fp32), str(data_files["pos"]), str(data_files["neg"]), tmp_path / "b1",
              samples=20, max_length=48, batch_size=1, storage="float64", progress=False)
    calibrate(str(tiny_fp32), str(data_files["pos"]), str(data_files["neg"]), tmp_path / "b7",
              samples=20, max_length=48, batch_size=7, storage="float64", progress=False)
    for role in ("pos", "neg"):
        one, seven = load_file(tmp_path / "b1" / f"{role}.safetensors"), load_file(tmp_path / "b7" / f"{role}.safetensors")
        for key in one:
            torch.testing.assert_close(one[key], seven[key], rtol=1e-5, atol=1e-7)


def test_calibration_manifest_records_model_data_and_settings(fp32_run, tiny_fp32, data_files):
    manifest = json.loads((fp32_run.calib / "manifest.json").read_text())
    assert manifest["kind"] == "calibration" and manifest["schema_version"] == 1
    assert set(manifest["model"]["weight_files"]) == {"model.safetensors"}
    roles = {d["role"]: d for d in manifest["datasets"]}
    assert roles["+"]["samples"] == 60 and roles["-"]["samples"] == 60
    assert roles["+"]["tokens"] > 60 and len(roles["+"]["texts_sha256"]) == 64
    assert manifest["config"]["normalization"] == "token" and manifest["config"]["samples"] == 1000
    assert set(manifest["files"]) == {"pos.safetensors", "neg.safetensors"}


def test_sample_normalisation_is_recorded_and_scales_by_length(tiny_fp32, data_files, tmp_path):
    calibrate(str(tiny_fp32), str(data_files["pos"]), str(data_files["neg"]), tmp_path / "tok", samples=10, max_length=48,
              storage="float64", progress=False)
    calibrate(str(tiny_fp32), str(data_files["pos"]), str(data_files["neg"]), tmp_path / "smp", samples=10, max_length=48,
              normalization="sample", storage="float64", progress=False)
    manifest = json.loads((tmp_path / "tok" / "manifest.json").read_text())
    tokens = {d["role"]: d["tokens"] for d in manifest["datasets"]}
    by_token, by_sample = load_file(tmp_path / "tok" / "pos.safetensors"), load_file(tmp_path / "smp" / "pos.safetensors")
    key = next(iter(by_token))
    torch.testing.assert_close(by_sample[key], by_token[key] * tokens["+"] / 10)
    assert json.loads((tmp_path / "smp" / "manifest.json").read_text())["config"]["normalization"] == "sample"


def test_chat_rows_and_bf16_calibration(tiny_bf16, data_files, tmp_path):
    manifest = calibrate(str(tiny_bf16), str(data_files["chat"]), str(data_files["neg"]), tmp_path / "c",
                         samples=8, max_length=32, progress=False)
    assert manifest["model"]["checkpoint_dtype"] == "bfloat16"
    with open_covariances(tmp_path / "c", Role.POS) as covariance:
        assert all(t.dtype == torch.float64 and bool(torch.isfinite(t).all()) for t in map(covariance.get, covariance.keys()))


def test_a_bad_dataset_is_reported_before_the_model_is_loaded(tiny_fp32, tmp_path, monkeypatch):
    monkeypatch.setattr(models, "load_model", lambda *a, **k: pytest.fail("the model must not load for a bad dataset"))
    with pytest.raises(InputError, match="does not exist"):
        calibrate(str(tiny_fp32), str(tmp_path / "missing.jsonl"), str(tmp_path / "missing.jsonl"), tmp_path / "c", progress=False)
