"""Every `--method` through the real stages on tiny Llama models (fp32 and bf16): one calibration
made with `--for all` serves them all, each leaves the logits unchanged at init and rebuilds W0
bit for bit at merge, and a calibration that lacks what a method needs is refused in one sentence."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForCausalLM
from typer.testing import CliRunner

from sclora_tools import calibrate, init, merge
from sclora_tools.cli.app import app
from sclora_tools.core import exact
from sclora_tools.core.methods import METHODS
from sclora_tools.errors import InputError, UsageError
from sclora_tools.io.adapter import read_adapter
from sclora_tools.io.checkpoint import CheckpointReader
from sclora_tools.io.covariances import open_covariances
from sclora_tools.io.manifest_types import Role
from tests.calibrations import DEFAULT_CALIBRATION, FOR_ALL
from tests.documents import result_of

RANK = 6
TOLERANCE = {"fp32": 1e-4, "bf16": 5e-2}  # bf16: W_res is rounded to bf16, as the existing SC-LoRA check allows


@pytest.fixture(scope="module")
def calibrations(tiny_chain) -> dict[str, tuple[Path, Path]]:
    """`calibrate --for all` of the fp32 and bf16 tiny models (shared, read-only): (calib, model)."""
    chains = {dtype: tiny_chain(dtype, calibrate=FOR_ALL) for dtype in ("fp32", "bf16")}
    return {dtype: (chain.calib, chain.model) for dtype, chain in chains.items()}


@pytest.fixture(scope="module")
def default_calibration(tiny_chain) -> Path:
    return tiny_chain("fp32", calibrate=DEFAULT_CALIBRATION).calib


def logits(model, ids, mask) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask).logits.float()


@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
@pytest.mark.parametrize("method", list(METHODS))
def test_every_method_keeps_the_logits_at_init_and_rebuilds_w0_bit_exactly(method, dtype, calibrations, sample_ids, tmp_path):
    calibration, model_dir = calibrations[dtype]
    manifest = init(calibration, tmp_path / "run", method=method, rank=RANK, beta=0.8, alpha=2.0 * RANK, progress=False)
    assert manifest["config"]["method"] == method
    assert manifest["config"]["beta"] == (0.8 if method == "sclora" else None)
    ids, mask = sample_ids
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    residual = AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "residual", dtype=torch.float32)
    adapted = PeftModel.from_pretrained(residual, tmp_path / "run" / "adapter")
    assert (logits(base, ids, mask) - logits(adapted, ids, mask)).abs().max().item() <= TOLERANCE[dtype]
    result = merge(tmp_path / "run", rebuild_base=tmp_path / "w0", progress=False)
    assert result["verification"]["passed"]
    rebuilt, source = CheckpointReader(tmp_path / "w0" / "base"), CheckpointReader(model_dir)
    assert set(rebuilt.names) == set(source.names)
    for name in source.names:
        assert torch.equal(exact.bit_view(rebuilt.read(name)), exact.bit_view(source.read(name))), name


def test_data_driven_methods_change_the_residual_and_lora_does_not(calibrations, tmp_path):
    calibration, model_dir = calibrations["fp32"]
    source = CheckpointReader(model_dir)
    name = "model.layers.1.mlp.down_proj.weight"
    for method in ("lora", "pissa", "corda-kpa", "lora-null"):
        init(calibration, tmp_path / method, method=method, rank=RANK, progress=False)
        w_res = CheckpointReader(tmp_path / method / "residual").read(name)
        assert torch.equal(w_res, source.read(name)) == (method == "lora"), method


def test_one_calibration_with_for_all_stores_every_input_and_keeps_sclora_unchanged(calibrations, tiny_chain, tmp_path):
    """`auto` storage is lossless for the input-side methods (LoRA-Null and CorDA read small
    eigenvalues), so the comparison is with a default calibration stored lossless too."""
    default_calibration = tiny_chain("fp32", calibrate={**DEFAULT_CALIBRATION, "storage": "float64-packed"}).calib
    full = json.loads((calibrations["fp32"][0] / "manifest.json").read_text())
    default = json.loads((default_calibration / "manifest.json").read_text())
    assert full["config"]["for_methods"] == sorted(METHODS) and default["config"]["for_methods"] == ["sclora"]
    assert (full["config"]["storage_requested"], full["config"]["storage"]) == ("auto", "float64-packed")
    full_keys = {site["key"] for site in full["config"]["sites"]}
    default_keys = {site["key"] for site in default["config"]["sites"]}
    assert default_keys < full_keys
    assert {"model.layers.0.mlp.down_proj:input", "model.layers.0.mlp.down_proj:output"} <= full_keys
    assert "model.layers.0.mlp.down_proj:input" not in default_keys
    init(calibrations["fp32"][0], tmp_path / "full", rank=RANK, progress=False)
    init(default_calibration, tmp_path / "default", rank=RANK, progress=False)
    _, from_full = read_adapter(tmp_path / "full" / "adapter")
    _, from_default = read_adapter(tmp_path / "default" / "adapter")
    for module, pair in from_default.items():  # same covariances at SC-LoRA's sites: the same adapter, bit for bit
        assert torch.equal(pair.b, from_full[module].b) and torch.equal(pair.a, from_full[module].a), module


@pytest.mark.parametrize("method", ["corda-ipa", "corda-kpa", "lora-null"])
def test_a_calibration_without_input_covariances_is_refused_in_one_sentence(method, default_calibration, tmp_path):
    with pytest.raises(InputError) as info:
        init(default_calibration, tmp_path / "run", method=method, rank=RANK, progress=False)
    message = str(info.value)
    assert f"--for {method}" in message and "down_proj" in message and message.count(". ") == 0
    assert not (tmp_path / "run").exists()


def test_methods_that_read_no_covariance_run_from_a_default_calibration(default_calibration, tmp_path):
    for method in ("pissa", "milora", "olora"):
        manifest = init(default_calibration, tmp_path / method, method=method, rank=RANK, progress=False)
        assert manifest["config"]["method_settings"]["reads"] == []
        assert 0.0 < manifest["summary"]["energy_pos"] < 1.0  # the share of Cov+ energy in span(B), for comparison


def test_lora_null_records_the_eigen_gap_of_every_layer(calibrations, tmp_path):
    manifest = init(calibrations["fp32"][0], tmp_path / "run", method="lora-null", rank=RANK, progress=False)
    assert manifest["config"]["method_settings"]["reads"] == ["input-side Cov-"]
    for name, layer in manifest["layers"].items():
        assert layer["null_eigenvalue_inside"] <= layer["null_eigenvalue_outside"], name
        assert 0.0 <= layer["null_energy_share"] < 0.1, name
    summary = manifest["summary"]
    assert summary["null_gap_ratio_min"] >= 1.0 and summary["layers_not_unique"] == 0
    assert summary["null_energy_share_max"] == max(layer["null_energy_share"] for layer in manifest["layers"].values())


def test_lora_null_down_projection_is_orthogonal_to_the_neg_principal_subspace(calibrations, tmp_path):
    calibration, _ = calibrations["fp32"]
    init(calibration, tmp_path / "run", method="lora-null", rank=RANK, progress=False)
    _, pairs = read_adapter(tmp_path / "run" / "adapter")
    module = "model.layers.0.mlp.down_proj"
    with open_covariances(calibration, Role.NEG) as neg:
        cov = neg.get(f"{module}:input")
    _, vectors = torch.linalg.eigh(cov)
    a = pairs[module].a.double()
    principal = vectors[:, RANK:]
    assert (a @ principal).abs().max() <= 1e-5 * a.abs().max()  # float32 storage of A: 1e-5 relative


def test_calibrate_for_rejects_unknown_methods(tiny_fp32, data_files, tmp_path):
    with pytest.raises(UsageError, match="--for 'dora' is not a method"):
        calibrate(str(tiny_fp32), str(data_files["pos"]), str(data_files["neg"]), tmp_path / "c", for_methods="dora", progress=False)


def test_cli_init_method_and_calibrate_for(tiny_fp32, data_files, default_calibration, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["init", str(default_calibration), "-o", str(tmp_path / "run"), "--method", "lora-null", "--rank", "4"])
    assert result.exit_code == InputError.exit_code
    assert "--forlora-null" in "".join(result.output.split()) and "Traceback" not in result.output
    result = runner.invoke(app, ["calibrate", str(tiny_fp32), "--pos", str(data_files["pos"]), "--neg", str(data_files["neg"]),
                                 "-o", str(tmp_path / "calib"), "--samples", "20", "--for", "corda-kpa,lora-null", "--json"])
    assert result.exit_code == 0, result.output
    assert result_of(result.stdout, "calibrate")["config"]["for_methods"] == ["corda-kpa", "lora-null", "sclora"]
    result = runner.invoke(app, ["init", str(tmp_path / "calib"), "-o", str(tmp_path / "run"), "--method", "corda-kpa", "--rank", "4", "--json"])
    assert result.exit_code == 0, result.output
    assert result_of(result.stdout, "init")["config"]["method_settings"]["reads"] == ["input-side Cov-"]


def test_lora_null_with_freeze_a_is_the_papers_variant_and_never_touches_the_neg_principal_subspace(tiny_chain):
    """`sclora train --freeze-a` on a lora-null init: A (the down projection) stays bit-identical,
    B learns, so the whole update s (B - B_init) A_init maps the D- principal subspace to 0."""
    chain = tiny_chain("fp32", calibrate=FOR_ALL, init={"method": "lora-null", "rank": 4},
                       train={"max_steps": 3, "lr": 5e-3, "batch_size": 4, "max_length": 96, "freeze_a": True})
    config, start = read_adapter(chain.run / "adapter")
    _, trained = read_adapter(chain.trained / "adapter")
    scale = config.scale
    module = "model.layers.1.mlp.down_proj"
    assert torch.equal(trained[module].a, start[module].a)
    assert not torch.equal(trained[module].b, start[module].b)
    with open_covariances(chain.calib, Role.NEG) as neg:
        _, vectors = torch.linalg.eigh(neg.get(f"{module}:input"))
    update = scale * (trained[module].b.double() @ trained[module].a.double() - start[module].b.double() @ start[module].a.double())
    principal = vectors[:, 4:]
    assert (update @ principal).abs().max() <= 1e-5 * update.abs().max()


def test_auto_storage_stays_quantised_for_sclora_and_an_explicit_form_is_kept(tiny_fp32, data_files, tmp_path):
    def stored(out, **options):
        manifest = calibrate(str(tiny_fp32), str(data_files["pos"]), str(data_files["neg"]), out, samples=24, max_length=40,
                             progress=False, **options)
        return manifest["config"]["storage"]

    assert stored(tmp_path / "default") != "float64-packed"
    assert stored(tmp_path / "lora-null", for_methods="lora-null", storage="corr24") == "corr24"
