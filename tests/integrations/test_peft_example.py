"""examples/peft_trainer.py runs as its first line says (here on the tiny model's calibration) and
leaves a standard LoRA that loads on the ORIGINAL base model."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM

from tests.calibrations import DEFAULT_CALIBRATION

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "peft_trainer.py"


def test_the_trainer_example_runs_and_its_adapter_loads_on_the_original_model(tiny_chain, tiny_fp32, sample_ids, tmp_path):
    assert EXAMPLE.read_text().startswith("# sclora calibrate ") and len(EXAMPLE.read_text().splitlines()) <= 30
    calibration = tiny_chain("fp32", calibrate=DEFAULT_CALIBRATION).calib  # read-only: the example only reads it
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    done = subprocess.run([sys.executable, str(EXAMPLE), str(calibration)], cwd=tmp_path, env=environment, capture_output=True,
                          text=True, timeout=900, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    ids, mask = sample_ids
    original = AutoModelForCausalLM.from_pretrained(tiny_fp32, dtype=torch.float32)
    with torch.no_grad():
        before = original(input_ids=ids, attention_mask=mask).logits
    adapted = PeftModel.from_pretrained(original, tmp_path / "out" / "adapter")
    assert adapted.peft_config["default"].r == 32  # rank 2r: [B, -B_init], [A; A_init]
    with torch.no_grad():
        after = adapted(input_ids=ids, attention_mask=mask).logits
    assert 1e-4 < (after - before).abs().max().item() < 50.0  # trained, and still the same model family
