"""The README's main job, reduced: the whole pipeline on the real embedded SmolLM2, offline, from the
shipped aligned start."""

from __future__ import annotations

import json

import pytest

from sclora_tools.workflows.demo import DemoSettings, demo


@pytest.mark.slow
@pytest.mark.filterwarnings("error::UserWarning")  # no third-party warning leaks into a normal run (peft's vocabulary check did)
def test_reduced_demo_runs_every_stage_from_the_aligned_start(tmp_path):
    settings = DemoSettings(samples=16, max_length=128, rank=8, steps=3, batch_size=2, train_length=256, eval_samples=16, compare=False)
    results = demo(tmp_path / "demo", settings, progress=False)
    assert results["verification_passed"]
    assert set(results["seconds"]) == {"eval start", "calibrate", "init", "train", "merge", "eval", "push", "total"}
    assert 0.0 <= results["metrics"]["refusal_rate"] <= 1.0 and results["metrics"]["knowledge_em"] >= 0.0
    shipped, start, after = results["comparison"]
    assert (shipped["model"], start["model"]) == ("shipped model", "start (W0)")
    assert (settings.baseline, settings.model) == ("smollm2-135m-instruct", "smollm2-135m-instruct-aligned")
    assert start["refusal_rate"] >= shipped["refusal_rate"] + 0.5  # the shipped adapter is what makes the start refuse
    assert shipped["rougeL"] is None and start["rougeL"] is not None and after["update_norm"] > 0
    published = tmp_path / "demo" / "publish"
    assert (published / "model.safetensors").is_file() and (published / "lora" / "adapter_config.json").is_file()
    card = (published / "README.md").read_text()
    assert "beta: 0.9" in card and "sclora" in card
    merge_manifest = json.loads((tmp_path / "demo" / "merged" / "manifest.json").read_text())
    assert merge_manifest["verification"]["checked"] == 272
    assert merge_manifest["model"]["id"] == "smollm2-135m-instruct-aligned"


def test_demo_compares_sclora_with_vanilla_lora_at_their_own_rates(tiny_fp32, tmp_path):
    settings = DemoSettings(model=str(tiny_fp32), baseline=str(tiny_fp32), samples=4, max_length=32, rank=2, steps=2, batch_size=2,
                            train_length=256, eval_samples=2)
    results = demo(tmp_path / "demo", settings, progress=False)
    assert "lora" in results["seconds"]
    shipped, start, lora, sclora = results["comparison"]
    assert [row["model"] for row in (lora, sclora)] == ["LoRA", "SC-LoRA b=0.9"]
    assert (lora["lr"], sclora["lr"]) == (settings.lora_lr, settings.lr) and settings.lora_lr > 5 * settings.lr
    assert shipped["over_refusal_rate"] is None and start["rougeL"] is not None and start["update_norm"] is None
    lora_train = json.loads((tmp_path / "demo" / "lora-trained" / "manifest.json").read_text())
    assert lora_train["summary"]["update_norm"] == lora["update_norm"] > 0
    assert lora_train["summary"]["steps"] == settings.steps
    assert sclora["refusal_rate"] == results["metrics"]["refusal_rate"]
