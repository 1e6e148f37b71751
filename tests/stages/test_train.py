"""`train` on tiny Llama models: training that learns and records its settings, frozen factors that
stay bit-identical, clean refusals, resuming from a checkpoint, and the drift report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from sclora_tools import data, train
from sclora_tools.errors import InputError, UsageError
from sclora_tools.features import Collator, tokenize_for_loss
from tests.stages.conftest import TRAINED


def test_training_reduces_loss_and_records_its_settings(fp32_trained, data_files):
    log = json.loads((fp32_trained.trained / "loss_log.json").read_text())
    assert len(log) == 10 and all(h["loss"] > 0 for h in log)
    run = fp32_trained.run
    assert fixed_batch_loss(run, fp32_trained.trained / "adapter", data_files) < fixed_batch_loss(run, run / "adapter", data_files) - 0.1
    manifest = json.loads((fp32_trained.trained / "manifest.json").read_text())
    assert manifest["kind"] == "train" and manifest["config"]["train"]["lr"] == 5e-3
    assert manifest["parents"][0]["kind"] == "init"
    merge_manifest = json.loads((fp32_trained.merged / "manifest.json").read_text())
    assert merge_manifest["verification"]["passed"] and merge_manifest["verification"]["checked"] == 21
    assert merge_manifest["config"]["train"]["lr"] == 5e-3  # training settings travel on to push
    assert [d["role"] for d in merge_manifest["datasets"]] == ["+", "-", "train"]


@pytest.mark.parametrize("frozen", ["A", "B"])
def test_frozen_factor_stays_bit_identical_while_the_other_learns(frozen, small_run, data_files, tmp_path):
    run = small_run()
    train(run, tmp_path / "t", data_argument=str(data_files["pos"]), max_steps=6, lr=5e-3, batch_size=4, max_length=96,
          freeze_a=frozen == "A", freeze_b=frozen == "B", progress=False)
    before = load_file(run / "adapter" / "adapter_model.safetensors")
    after = load_file(tmp_path / "t" / "adapter" / "adapter_model.safetensors")
    moving = "B" if frozen == "A" else "A"
    for key in before:
        if f"lora_{frozen}" in key:
            assert torch.equal(before[key], after[key]), key
    assert any(not torch.equal(before[k], after[k]) for k in before if f"lora_{moving}" in k)
    assert fixed_batch_loss(run, tmp_path / "t" / "adapter", data_files) < fixed_batch_loss(run, run / "adapter", data_files)


def fixed_batch_loss(run: Path, adapter: Path, data_files: dict) -> float:
    """Mean response-token loss of PeftModel(residual, adapter) on the first 16 training rows."""
    tokenizer = AutoTokenizer.from_pretrained(run / "residual")
    loaded = data.load_dataset_rows(str(data_files["pos"]), None, 0)
    features = [tokenize_for_loss(data.render(row, tokenizer, loaded.spec), tokenizer, 96) for row in loaded.rows[:16]]
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(run / "residual", dtype=torch.float32), adapter)
    with torch.no_grad():
        return model(**Collator(tokenizer.pad_token_id)(features)).loss.item()


def test_freeze_b_is_refused_for_vanilla_lora(small_run, data_files, tmp_path):
    run = small_run(method="lora")
    with pytest.raises(UsageError, match="freeze-b"):
        train(run, tmp_path / "t", data_argument=str(data_files["pos"]), max_steps=1, freeze_b=True, progress=False)


def test_without_data_it_trains_on_the_local_file_calibration_read(small_run, data_files, tmp_path, monkeypatch):
    run = small_run()
    monkeypatch.chdir(tmp_path)  # the file's bare name means nothing here: the recorded path is what counts
    manifest = train(run, tmp_path / "t", max_steps=1, batch_size=2, max_length=96, progress=False)
    record = next(d for d in manifest["datasets"] if d["role"] == "train")
    assert record["source"] == str(data_files["pos"].resolve()) and record["kind"] == "file"


def test_samples_without_response_tokens_are_refused(small_run, data_files, tmp_path):
    run = small_run()
    with pytest.raises(InputError, match="max-length"):
        train(run, tmp_path / "t", data_argument=str(data_files["pos"]), max_steps=1, max_length=8, progress=False)


def test_resume_continues_from_the_last_checkpoint(small_run, data_files, tmp_path):
    run = small_run()
    options = dict(data_argument=str(data_files["pos"]), lr=5e-3, batch_size=4, max_length=96, save_steps=2, progress=False)
    train(run, tmp_path / "t", max_steps=4, **options)
    assert (tmp_path / "t" / "checkpoints" / "checkpoint-4").is_dir()
    manifest = train(run, tmp_path / "t", max_steps=6, resume=True, **options)
    log = json.loads((tmp_path / "t" / "loss_log.json").read_text())
    assert [h["step"] for h in log] == [1, 2, 3, 4, 5, 6]  # the history up to checkpoint-4 is restored with it
    assert manifest["summary"]["steps"] == 6


def test_drift_is_reported_and_zero_when_b_is_frozen(small_run, fp32_trained, data_files, tmp_path):
    run = small_run()
    options = dict(data_argument=str(data_files["pos"]), progress=False, **TRAINED)  # 10 steps, lr 5e-3, batch 4, length 96
    locked_summary = train(run, tmp_path / "locked", freeze_b=True, **options)["summary"]
    free_dir = fp32_trained.trained  # the same run trained with the same options, B free: built once, shared
    assert fp32_trained.run == run
    free_summary = json.loads((free_dir / "manifest.json").read_text())["summary"]
    locked, free = locked_summary["subspace"], free_summary["subspace"]
    assert locked_summary["update_norm"] > 0 and free_summary["update_norm"] > 0
    assert locked["update_outside_fraction"] < 1e-12 and locked["b_change_outside_fraction"] == 0.0
    assert free["update_outside_fraction"] > 1e-4 and free["b_change_outside_fraction"] > 0.5
    log = json.loads((free_dir / "loss_log.json").read_text())
    assert log[-1]["update_outside_fraction"] == pytest.approx(free["update_outside_fraction"], rel=1e-6)
