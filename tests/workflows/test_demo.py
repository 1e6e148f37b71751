"""The README's main job, reduced: the whole pipeline on the real embedded SmolLM2, offline."""

from __future__ import annotations

import json

import pytest

from sclora_tools.workflows.demo import DemoSettings, demo


@pytest.mark.slow
@pytest.mark.filterwarnings("error::UserWarning")  # no third-party warning leaks into a normal run (peft's vocabulary check did)
def test_reduced_demo_runs_every_stage_on_the_real_model(tmp_path):
    settings = DemoSettings(samples=16, max_length=128, rank=8, steps=3, batch_size=2, train_length=256, eval_samples=4)
    results = demo(tmp_path / "demo", settings, progress=False)
    assert results["verification_passed"]
    assert set(results["seconds"]) == {"calibrate", "init", "train", "merge", "eval", "push", "total"}
    assert 0.0 <= results["metrics"]["refusal_rate"] <= 1.0 and results["metrics"]["knowledge_em"] >= 0.0
    published = tmp_path / "demo" / "publish"
    assert (published / "model.safetensors").is_file() and (published / "lora" / "adapter_config.json").is_file()
    card = (published / "README.md").read_text()
    assert "beta: 0.9" in card and "sclora" in card
    merge_manifest = json.loads((tmp_path / "demo" / "merged" / "manifest.json").read_text())
    assert merge_manifest["verification"]["checked"] == 272
