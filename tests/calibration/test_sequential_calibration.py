"""Sequential calibration (one decoder block at a time from the shards) gives the in-memory
path's covariances: fp32 and bf16, with padding, several batch sizes, hidden states spilled to
disk; `--sequential auto` picks it when the model does not fit."""

from __future__ import annotations

import pytest
import torch

from sclora_tools import calibrate
from sclora_tools.calibration import placement, sequential
from sclora_tools.errors import UsageError
from sclora_tools.io.covariances import open_covariances
from sclora_tools.io.manifest_types import Role

OPTIONS = {"samples": 24, "max_length": 40, "storage": "float64", "device": "cpu", "progress": False}


def run(model_dir, data_files, out, **options):
    return calibrate(str(model_dir), str(data_files["pos"]), str(data_files["neg"]), out, **{**OPTIONS, **options})


def covariances(directory, role):
    with open_covariances(directory, Role.parse(role)) as stored:
        return {key: stored.get(key) for key in stored.keys()}


def assert_same_covariances(left, right, rtol=0.0, atol_scale=0.0):
    for role in ("pos", "neg"):
        a, b = covariances(left, role), covariances(right, role)
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=rtol, atol=atol_scale * b[key].abs().max().item())


@pytest.fixture(scope="module")
def in_memory_runs(tiny_fp32, tiny_bf16, data_files, tmp_path_factory):
    root = tmp_path_factory.mktemp("in-memory")
    runs = {}
    for name, model_dir in (("fp32", tiny_fp32), ("bf16", tiny_bf16)):
        for batch_size in (1, 5):
            runs[name, batch_size] = root / f"{name}-{batch_size}"
            run(model_dir, data_files, runs[name, batch_size], batch_size=batch_size, sequential="off")
    return runs


@pytest.mark.parametrize("name", ["fp32", "bf16"])
@pytest.mark.parametrize("batch_size", [1, 5])
def test_sequential_equals_in_memory_at_the_same_batch_size(name, batch_size, in_memory_runs, request, data_files, tmp_path):
    model_dir = request.getfixturevalue(f"tiny_{name}")
    manifest = run(model_dir, data_files, tmp_path / "seq", batch_size=batch_size, sequential="on")
    assert manifest["config"]["engine"] == "sequential" and manifest["config"]["sequential"] == "on"
    # the same kernels on the same padded batches: equal to the last bit, bf16 included
    assert_same_covariances(tmp_path / "seq", in_memory_runs[name, batch_size])


def test_padding_and_batch_size_do_not_change_sequential_results(in_memory_runs, tiny_fp32, data_files, tmp_path):
    run(tiny_fp32, data_files, tmp_path / "seq", batch_size=5, sequential="on")
    assert_same_covariances(tmp_path / "seq", in_memory_runs["fp32", 1], rtol=1e-5, atol_scale=1e-6)


def test_hidden_states_spilled_to_disk_give_the_same_result(in_memory_runs, tiny_bf16, data_files, tmp_path, monkeypatch):
    spilled = []
    original_close = sequential.HiddenStore.close

    def remember(store):
        spilled.append(store.spilled)
        original_close(store)

    monkeypatch.setattr(sequential, "HIDDEN_BUDGET_FRACTION", 0.0)
    monkeypatch.setattr(sequential.HiddenStore, "close", remember)
    run(tiny_bf16, data_files, tmp_path / "seq", batch_size=5, sequential="on")
    assert spilled and spilled[0] == 10  # 5 + 5 batches of 5 samples, every one on disk
    assert_same_covariances(tmp_path / "seq", in_memory_runs["bf16", 5])
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".sclora-hidden-")]


def test_auto_goes_sequential_only_when_the_model_does_not_fit(tiny_fp32, data_files, tmp_path, monkeypatch):
    fits = run(tiny_fp32, data_files, tmp_path / "fits", batch_size=5)
    assert fits["config"]["engine"] == "in-memory" and fits["config"]["sequential"] == "auto"
    monkeypatch.setattr(placement, "available_memory", lambda device: fits["config"]["model_bytes"])
    tight = run(tiny_fp32, data_files, tmp_path / "tight", batch_size=5)
    assert tight["config"]["engine"] == "sequential"
    assert tight["config"]["available_bytes"] == tight["config"]["model_bytes"]
    assert_same_covariances(tmp_path / "tight", tmp_path / "fits")


def test_device_map_auto_runs_through_accelerate(in_memory_runs, tiny_fp32, data_files, tmp_path):
    manifest = run(tiny_fp32, data_files, tmp_path / "mapped", batch_size=5, device_map="auto")
    assert manifest["config"]["engine"] == "device-map"
    assert_same_covariances(tmp_path / "mapped", in_memory_runs["fp32", 5])


def test_contradictory_engine_options_are_refused(tiny_fp32, data_files, tmp_path):
    with pytest.raises(UsageError, match="choose one"):
        run(tiny_fp32, data_files, tmp_path / "x", device_map="auto", sequential="on")
    with pytest.raises(UsageError, match="auto, on or off"):
        run(tiny_fp32, data_files, tmp_path / "x", sequential="maybe")
    with pytest.raises(UsageError, match="--resume work with the in-memory engine"):
        run(tiny_fp32, data_files, tmp_path / "x", sequential="on", checkpoint_every=2)
    assert not (tmp_path / "x").exists()


def test_storage_auto_keeps_float32_when_there_are_fewer_tokens_than_twice_the_dimension(tiny_fp32, data_files, tmp_path):
    many = run(tiny_fp32, data_files, tmp_path / "many", storage="auto")
    few = run(tiny_fp32, data_files, tmp_path / "few", storage="auto", samples=2, max_length=8)
    assert many["config"]["storage_requested"] == few["config"]["storage_requested"] == "auto"
    assert min(d["tokens"] for d in many["datasets"]) >= 2 * 64 and many["config"]["storage"] == "corr24"
    assert min(d["tokens"] for d in few["datasets"]) < 2 * 64 and few["config"]["storage"] == "float32"
    with open_covariances(tmp_path / "few", Role.POS) as stored:
        assert stored.form == "float32"


def test_sequential_stores_the_input_sites_of_calibrate_for_all(tiny_fp32, data_files, tmp_path):
    """`--for all` adds every target's input-side site; block by block gives the same ones."""
    memory = run(tiny_fp32, data_files, tmp_path / "mem", batch_size=5, sequential="off", for_methods="all")
    blocks = run(tiny_fp32, data_files, tmp_path / "seq", batch_size=5, sequential="on", for_methods="all")
    assert blocks["config"]["sites"] == memory["config"]["sites"]
    assert {site["side"] for site in blocks["config"]["sites"]} == {"input", "output"}
    assert blocks["config"]["for_methods"] == memory["config"]["for_methods"] and len(memory["config"]["for_methods"]) > 1
    assert_same_covariances(tmp_path / "seq", tmp_path / "mem")
