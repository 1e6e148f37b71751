"""The README's main job, reduced: the whole pipeline on the real embedded SmolLM2, offline, from the
shipped aligned start, run as a user runs it (the `sclora` script in its own process), printing
nothing but our own output; and the demo's LoRA comparison on a tiny model."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from sclora_tools import aligned
from sclora_tools.workflows.demo import DemoSettings, demo

SCLORA = str(Path(sys.executable).with_name("sclora"))
REDUCED = ["--samples", "16", "--rank", "8", "--steps", "3", "--eval-samples", "16", "--quick"]
START = "smollm2-135m-instruct-aligned"

# What our own stderr is made of (rich, not a terminal): stage rules, finished progress bars,
# summary tables (title, box lines) and our `warning:` lines. Anything else came from a library.
OURS = [
    re.compile(r"^─+ \w+ ─+$"),  # ui.console.rule(stage)
    re.compile(r"^[\w +-]+ ━+ .*$"),  # a finished rich progress bar: description, bar, counts
    re.compile(r"^sclora \w+\s*$"),  # a summary table's title
    re.compile(r"^[┏┃┡│└┗┌├┝┠┣╇╭╰╷╵].*$"),  # a table's box
    re.compile(r"^warning: .+"),  # ui.warn, possibly wrapped over several lines
]
THIRD_PARTY = [
    re.compile(r"\w+Warning: "),  # a Python warning as `warnings` shows it (FutureWarning, UserWarning, ...)
    re.compile(r"\{'(loss|train_runtime|grad_norm|learning_rate)'"),  # the Trainer's PrinterCallback dicts
    re.compile(r"\d+it/s\]|s/it\]|\d+%\|"),  # tqdm bars
    re.compile(r"Loading weights|Writing model shards|Generating \w+ split|Map:"),  # transformers / datasets bars
]


def foreign_lines(stderr: str) -> list[str]:
    """Lines of stderr that neither are ours nor continue one of ours (a wrapped warning)."""
    foreign, in_warning = [], False
    for line in stderr.splitlines():
        if not line.strip():
            in_warning = False
            continue
        mine = any(pattern.match(line) for pattern in OURS)
        in_warning = line.startswith("warning: ") or (in_warning and not mine)
        if not mine and not in_warning or any(pattern.search(line) for pattern in THIRD_PARTY):
            foreign.append(line)
    return foreign


def test_our_output_filter_flags_library_chatter():
    assert foreign_lines("─── train ───\ntrain ━━━━ 3/3 100% loss 1.9\nwarning: cut\n  to 128 tokens\n") == []
    leaks = ["{'loss': '2.176', 'grad_norm': 1.2}", "x.py:3312: FutureWarning: `is_gradient_checkpointing` is deprecated",
             "Writing model shards: 100%|██████████| 1/1 [00:00<00:00, 648.27it/s]", "Loading weights: 100%|█| 272/272"]
    assert foreign_lines("\n".join(leaks)) == leaks


@pytest.mark.slow
def test_reduced_demo_runs_every_stage_on_the_real_model_and_prints_only_our_output(tmp_path):
    root = tmp_path / "demo"
    aligned.materialize(START)  # the cache built first, as the README's timing assumes (its first use says so on stderr)
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "120"}
    for setting in ("SCLORA_QUIET", "PYTHONWARNINGS"):  # Python's own warning filters, as a user has them
        environment.pop(setting, None)
    ran = subprocess.run([SCLORA, "demo", "-o", str(root), *REDUCED], capture_output=True, text=True, env=environment, timeout=1800)
    assert ran.returncode == 0, ran.stderr[-3000:]
    assert ran.stdout == ""  # people read stderr; stdout is for --json
    assert foreign_lines(ran.stderr) == [], ran.stderr
    for stage in ("calibrate", "init", "train", "merge", "eval", "push", "demo", "comparison"):
        assert f"sclora {stage}" in ran.stderr, stage  # each stage's own summary

    merge_manifest = json.loads((root / "merged" / "manifest.json").read_text())
    assert merge_manifest["verification"]["passed"] and merge_manifest["verification"]["checked"] == 272
    shipped, start = (json.loads((root / name).read_text())["metrics"] for name in ("eval-baseline.json", "eval-start.json"))
    assert start["refusal_rate"] >= shipped["refusal_rate"] + 0.5  # the shipped adapter is what makes the start refuse
    assert not (root / "lora-run").exists()  # --quick: no LoRA run
    metrics = json.loads((root / "merged" / "eval.json").read_text())["metrics"]
    assert 0.0 <= metrics["refusal_rate"] <= 1.0 and metrics["knowledge_em"] >= 0.0
    published = root / "publish"
    assert (published / "model.safetensors").is_file() and (published / "lora" / "adapter_config.json").is_file()
    card = (published / "README.md").read_text()
    assert "beta: 0.9" in card and "target_layers: 210" in card and "model.layers.0" not in card.split("\n---\n")[0]
    made = re.search(r"(?s)## How it was made.*?```bash\n(.*?)\n```", card).group(1)
    assert "sclora demo" not in card and made.splitlines()[0].startswith(f"sclora calibrate {START} --pos dialogsum")
    assert "--samples 16" in made and "--rank 8" in made and "--max-steps 3" in made


def test_demo_compares_sclora_with_vanilla_lora_at_their_own_rates(tiny_fp32, tmp_path):
    settings = DemoSettings(model=str(tiny_fp32), baseline=str(tiny_fp32), samples=4, max_length=32, rank=2, steps=2, batch_size=2,
                            train_length=256, eval_samples=2)
    results = demo(tmp_path / "demo", settings, progress=False)
    assert {"start", "lora"} <= set(results["seconds"])
    shipped, start, lora, sclora = results["comparison"]
    assert [row["model"] for row in results["comparison"]] == ["shipped model", "start (W0)", "LoRA", "SC-LoRA b=0.9"]
    assert (lora["lr"], sclora["lr"]) == (settings.lora_lr, settings.lr) and settings.lora_lr > 5 * settings.lr
    assert shipped["over_refusal_rate"] is None and start["rougeL"] is not None and start["update_norm"] is None
    lora_train = json.loads((tmp_path / "demo" / "lora-trained" / "manifest.json").read_text())
    assert lora_train["summary"]["update_norm"] == lora["update_norm"] > 0
    assert lora_train["summary"]["steps"] == settings.steps
    assert sclora["refusal_rate"] == results["metrics"]["refusal_rate"]
