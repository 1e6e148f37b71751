"""The shared testbed grid end to end on the tiny model: the probe pass measures each MATCHED
rate from the update norms, every row then runs at its rate with its flags, and a re-run resumes
(examples/testbed_common/grid.py)."""

from __future__ import annotations

import json
from argparse import Namespace
from pathlib import Path

import pytest
from safetensors.torch import load_file
from testbed_common import grid
from testbed_common.grid import Config, RateRule, Store, Training, matched_rate, run_grid

from sclora_tools import calibrate

CONFIGS = [Config("LoRA", "lora", rates=(5e-3,)), Config("SC-LoRA b=0.9", "sclora", 0.9),
           Config("LoRA-Null frozen A", "lora-null", freeze_a=True)]
RULE = RateRule(reference="LoRA", lr=5e-3, probe_lr=1e-2)
SETTINGS = {"testbed": "tiny"}


def adapter_of(trained: Path, run: Path, eval_args: dict) -> dict:
    """A stand-in evaluation: how many tensors the trained adapter holds (and a marker it ran)."""
    return {"tensors": len(load_file(trained / "adapter" / "adapter_model.safetensors")), "marker": eval_args["marker"]}


@pytest.fixture(scope="module")
def grid_run(tiny_fp32, data_files, tmp_path_factory):
    root = tmp_path_factory.mktemp("grid")
    calib = root / "calib"
    calibrate(str(tiny_fp32), str(data_files["pos"]), str(data_files["neg"]), calib, samples=8, max_length=24,
              for_methods=["lora-null"], progress=False)
    args = Namespace(lrs=None, seeds=[0, 1], out=root / "out", jobs=1)
    training = Training(steps=2, rank=4, batch_size=4, max_length=48, data=str(data_files["pos"]))
    rates = run_grid(Store(args.out, SETTINGS), CONFIGS, CONFIGS, RULE, args, calib, training, adapter_of, {"marker": 7})
    return root, calib, args, rates, training


def test_probe_pass_measures_each_matched_rate_from_the_norms(grid_run):
    root, _, _, rates, _ = grid_run
    probes = json.loads((root / "out" / "rates.json").read_text())
    assert probes["settings"] == SETTINGS
    assert set(probes["probes"]) == {"SC-LoRA b=0.9", "LoRA-Null frozen A"}, "LoRA's probe is its own seed-0 row"
    rows = json.loads((root / "out" / "results.json").read_text())["rows"]
    target = next(r["update_norm"] for r in rows if (r["config"], r["lr"], r["seed"]) == ("LoRA", 5e-3, 0))
    for name, probe in probes["probes"].items():
        assert probe["lr"] == 1e-2 and probe["seed"] == 0
        assert rates[name] == matched_rate(1e-2, probe["update_norm"], target)


def test_every_row_runs_at_its_rate_with_its_flags(grid_run):
    root, _, _, rates, _ = grid_run
    rows = json.loads((root / "out" / "results.json").read_text())["rows"]
    expected = {("LoRA", 5e-3)} | {(name, rate) for name, rate in rates.items()}
    assert {(r["config"], r["lr"], r["seed"]) for r in rows} == {(n, lr, s) for n, lr in expected for s in (0, 1)}
    assert len(rows) == 6 and all(r["marker"] == 7 and r["tensors"] > 0 for r in rows)
    frozen = next(r for r in rows if r["config"] == "LoRA-Null frozen A")
    tag = CONFIGS[2].tag(frozen["lr"], frozen["seed"])
    before = load_file(root / "out" / "inits" / "lora-null" / "adapter" / "adapter_model.safetensors")
    after = load_file(root / "out" / tag / "trained" / "adapter" / "adapter_model.safetensors")
    for name, tensor in after.items():
        if "lora_A" in name:
            assert (tensor == before[name]).all(), f"--freeze-a changed {name}"
    assert any(not (t == before[n]).all() for n, t in after.items() if "lora_B" in n), "B should have trained"


def test_a_rerun_resumes_where_the_grid_stopped(grid_run, monkeypatch):
    root, calib, args, rates, training = grid_run
    results = root / "out" / "results.json"
    saved = json.loads(results.read_text())
    dropped = saved["rows"].pop()
    results.write_text(json.dumps(saved))
    ran = []
    real = grid.run_one
    monkeypatch.setattr(grid, "run_one", lambda job: ran.append((job["config"]["name"], job["lr"], job["seed"])) or real(job))
    again = run_grid(Store(args.out, SETTINGS), CONFIGS, CONFIGS, RULE, args, calib, training, adapter_of, {"marker": 7})
    assert again == rates
    assert ran == [(dropped["config"], dropped["lr"], dropped["seed"])], "only the missing row runs, and no probe again"
    assert len(json.loads(results.read_text())["rows"]) == 6


def test_a_store_made_with_other_settings_is_refused(grid_run):
    root = grid_run[0]
    with pytest.raises(SystemExit, match="other settings"):
        Store(root / "out", {"testbed": "another"})
