"""`sclora sweep`: the predicted trade-off per beta equals what init measures for that beta, moves
the way Theorem 1 says (+ and - energy both non-increasing in beta), writes its table and PNGs,
and with --init writes the same init folders as `sclora init` would."""

from __future__ import annotations

import builtins
import csv
import itertools
import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from sclora_tools import calibrate, init, sweep
from sclora_tools.cli.app import app
from sclora_tools.errors import UsageError
from sclora_tools.io.adapter import read_adapter
from tests.calibrations import DEFAULT_CALIBRATION
from tests.documents import result_of

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
BETAS = [0.0, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 1.0]
RANK = 6


@pytest.fixture(scope="module")
def calibration(tiny_chain) -> Path:
    return tiny_chain("fp32", calibrate=DEFAULT_CALIBRATION).calib


@pytest.fixture(scope="module")
def swept(calibration, tmp_path_factory) -> tuple[dict, Path]:
    out = tmp_path_factory.mktemp("swept") / "sweep"
    return sweep(calibration, out, betas=BETAS, rank=RANK, progress=False), out


def non_increasing(values: list[float], tolerance: float = 1e-9) -> bool:
    return all(later <= earlier + tolerance for earlier, later in itertools.pairwise(values))


def assert_theorem_1(manifest: dict) -> None:
    """Theorem 1 (monotone comparative statics): as beta grows, the optimal subspace captures
    no more Cov+ and no more Cov- energy, per layer and so in total."""
    table = manifest["table"]
    assert [row["beta"] for row in table] == manifest["config"]["betas"]
    assert non_increasing([row["energy_pos"] for row in table])
    assert non_increasing([row["energy_neg"] for row in table])
    for name, layer in manifest["layers"].items():
        assert non_increasing(layer["energy_pos"]) and non_increasing(layer["energy_neg"]), name
    assert table[0]["energy_pos"] > table[-1]["energy_pos"] and table[0]["energy_neg"] > table[-1]["energy_neg"]


def test_sweep_moves_as_theorem_1_says(swept):
    assert_theorem_1(swept[0])


@pytest.mark.parametrize("beta", [0.0, 0.5, 0.9, 1.0])
def test_each_beta_predicts_what_init_measures(beta, swept, calibration, tmp_path):
    manifest, _ = swept
    index = manifest["config"]["betas"].index(beta)
    ran = init(calibration, tmp_path / "run", beta=beta, rank=RANK, progress=False)
    for name, layer in ran["layers"].items():
        assert manifest["layers"][name]["energy_pos"][index] == pytest.approx(layer["energy_pos"], rel=1e-7, abs=1e-12), name
        assert manifest["layers"][name]["energy_neg"][index] == pytest.approx(layer["energy_neg"], rel=1e-7, abs=1e-12), name
    assert manifest["table"][index]["energy_pos"] == pytest.approx(ran["summary"]["energy_pos"], rel=1e-7)
    assert manifest["table"][index]["energy_neg"] == pytest.approx(ran["summary"]["energy_neg"], rel=1e-7)
    objective = sum(layer["objective"] for layer in ran["layers"].values())
    assert manifest["table"][index]["objective"] == pytest.approx(objective, rel=1e-7, abs=1e-9)


def test_sweep_writes_its_table_pngs_and_manifest(swept):
    manifest, out = swept
    assert (out / "frontier.png").read_bytes().startswith(PNG_MAGIC)
    assert (out / "layers.png").read_bytes().startswith(PNG_MAGIC)
    with (out / "table.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert [float(row["beta"]) for row in rows] == BETAS
    assert float(rows[2]["energy_neg"]) == pytest.approx(manifest["table"][2]["energy_neg"], rel=1e-12)
    written = json.loads((out / "manifest.json").read_text())
    assert written["kind"] == "sweep" and set(written["files"]) == {"table.csv", "frontier.png", "layers.png"}
    assert len(written["layers"]) == 14 and written["parents"][0]["kind"] == "calibration"


def test_sweep_without_output_writes_nothing_and_returns_the_table(calibration, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    manifest = sweep(calibration, betas=[0.9, 0.1], rank=RANK, progress=False)
    assert [row["beta"] for row in manifest["table"]] == [0.1, 0.9]  # sorted
    assert not any(tmp_path.iterdir())


def test_sweep_init_writes_one_init_folder_per_beta_identical_to_sclora_init(calibration, tmp_path):
    manifest = sweep(calibration, tmp_path / "sweep", betas=[0.5, 0.95], rank=RANK, write_init=True, plots_enabled=False, progress=False)
    assert manifest["inits"] == {"0.5": "beta-0.5", "0.95": "beta-0.95"}
    init(calibration, tmp_path / "direct", beta=0.95, rank=RANK, progress=False)
    swept_init = json.loads((tmp_path / "sweep" / "beta-0.95" / "manifest.json").read_text())
    assert swept_init["kind"] == "init" and swept_init["config"]["beta"] == 0.95
    _, direct = read_adapter(tmp_path / "direct" / "adapter")
    _, from_sweep = read_adapter(tmp_path / "sweep" / "beta-0.95" / "adapter")
    for module, pair in direct.items():
        assert torch.equal(pair.b, from_sweep[module].b) and torch.equal(pair.a, from_sweep[module].a), module
    assert not (tmp_path / "sweep" / "frontier.png").exists()


@pytest.mark.parametrize("options, phrase", [
    ({"betas": [0.5, 1.5]}, "--betas must be values in [0, 1]"),
    ({"betas": []}, "--betas must be values in [0, 1]"),
    ({"rank": 0}, "--rank must be a positive integer"),
    ({"write_init": True}, "--init writes one init folder per beta and needs -o DIR"),
])
def test_bad_options_are_one_sentence_errors(options, phrase, calibration):
    with pytest.raises(UsageError) as info:
        sweep(calibration, **{"betas": [0.5], "rank": RANK, "progress": False, **options})
    assert phrase in str(info.value)


def test_missing_matplotlib_is_a_clear_error_before_any_work(calibration, tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_matplotlib(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    with pytest.raises(UsageError, match=r"need matplotlib.*sclora-tools\[plots\].*--no-plots"):
        sweep(calibration, tmp_path / "out", betas=[0.5], rank=RANK, progress=False)
    assert not (tmp_path / "out").exists()
    manifest = sweep(calibration, tmp_path / "out", betas=[0.5], rank=RANK, plots_enabled=False, progress=False)
    assert set(manifest["files"]) == {"table.csv"}


def test_cli_sweep_json(calibration, tmp_path):
    result = CliRunner().invoke(app, ["sweep", str(calibration), "--betas", "0,0.5,1", "--rank", "4", "-o", str(tmp_path / "s"), "--json"])
    assert result.exit_code == 0, result.output
    manifest = result_of(result.stdout, "sweep")
    assert manifest["config"]["betas"] == [0.0, 0.5, 1.0] and len(manifest["table"]) == 3
    bad = CliRunner().invoke(app, ["sweep", str(calibration), "--betas", "0,x"])
    assert bad.exit_code == UsageError.exit_code and "--betas must be comma-separated numbers" in bad.output


@pytest.mark.slow
def test_embedded_model_sweep_follows_theorem_1_and_draws_its_pngs(tmp_path):
    calibrate("smollm2-135m-instruct", "dialogsum", "safety", tmp_path / "calib", samples=12, max_length=64, batch_size=4,
              targets=["v_proj", "down_proj"], progress=False)
    manifest = sweep(tmp_path / "calib", tmp_path / "sweep", betas=BETAS, rank=8, progress=False)
    assert_theorem_1(manifest)
    assert len(manifest["layers"]) == 60
    for png in ("frontier.png", "layers.png"):
        assert (tmp_path / "sweep" / png).read_bytes().startswith(PNG_MAGIC)
