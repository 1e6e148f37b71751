"""calibrate --checkpoint-every / --resume: a run killed with SIGKILL after a checkpoint finishes
with the covariances of an uninterrupted run, and a checkpoint is never used for other settings
or other data."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from sclora_tools import calibrate
from sclora_tools.calibration import sink
from sclora_tools.calibration.resume import STATE_FILE, state_root
from sclora_tools.errors import InputError, MismatchError
from sclora_tools.io.covariances import open_covariances
from sclora_tools.io.manifest_types import Role
from tests.chain import tree_digest
from tests.tiny import corpus, write_jsonl

SCLORA = str(Path(sys.executable).parent / "sclora")
SETTINGS = {"samples": 200, "max_length": 24, "batch_size": 1, "storage": "float64", "device": "cpu"}


@pytest.fixture(scope="module")
def long_data(tmp_path_factory) -> dict[str, Path]:
    """Enough one-sample batches that a run is still going when its first checkpoints land."""
    root = tmp_path_factory.mktemp("long-data")
    texts = corpus(400, 3)
    return {"pos": write_jsonl(root / "pos.jsonl", [{"text": t} for t in texts[:200]]),
            "neg": write_jsonl(root / "neg.jsonl", [{"text": f"how do i {t}"} for t in texts[200:]]),
            "other": write_jsonl(root / "other.jsonl", [{"text": f"please {t}"} for t in texts[200:]])}


def cli_options(settings: dict) -> list[str]:
    return [part for key, value in settings.items() for part in (f"--{key.replace('_', '-')}", str(value))]


def kill_after_checkpoint(command: list[str], state: Path, min_batches: int) -> subprocess.Popen:
    """Start `command`, SIGKILL it once its checkpoint of the + data covers min_batches."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.time() + 240
    while time.time() < deadline and process.poll() is None:
        try:
            roles = json.loads(state.read_text())["roles"]
        except (OSError, ValueError, KeyError):
            roles = {}
        if roles.get("pos", {}).get("batches", 0) >= min_batches:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.02)
    process.wait(timeout=60)
    return process


def test_a_killed_run_resumes_to_the_uninterrupted_result(tiny_fp32, long_data, tmp_path):
    out = tmp_path / "calib"
    command = [SCLORA, "calibrate", str(tiny_fp32), "--pos", str(long_data["pos"]), "--neg", str(long_data["neg"]), "-o", str(out),
               "--checkpoint-every", "8", *cli_options(SETTINGS)]
    killed = kill_after_checkpoint(command, state_root(out) / STATE_FILE, min_batches=16)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.read()[-2000:]
    assert not (out / "manifest.json").exists()
    saved = json.loads((state_root(out) / STATE_FILE).read_text())["roles"]["pos"]
    assert 16 <= saved["batches"] < 200 and not saved["complete"]

    def resume(**changes):
        arguments = {"pos": long_data["pos"], "neg": long_data["neg"], **changes}
        return calibrate(str(tiny_fp32), str(arguments["pos"]), str(arguments["neg"]), out, **{**SETTINGS, **changes.get("settings", {})},
                         checkpoint_every=8, resume=True, progress=False)

    checkpoint = tree_digest(state_root(out))
    with pytest.raises(MismatchError, match=r"other settings or data \(batch_size differ\)"):
        resume(settings={"batch_size": 2})
    assert tree_digest(state_root(out)) == checkpoint and not out.exists()  # refused: the checkpoint is byte for byte as it was
    with pytest.raises(MismatchError, match=r"other settings or data \(data differ\)"):
        resume(neg=long_data["other"])
    assert tree_digest(state_root(out)) == checkpoint and not out.exists()
    manifest = resume()
    assert manifest["summary"]["resumed_batches"]["pos"] == saved["batches"]
    assert not state_root(out).exists()  # checkpoints go once the artefact is written

    uninterrupted = calibrate(str(tiny_fp32), str(long_data["pos"]), str(long_data["neg"]), tmp_path / "straight", **SETTINGS, progress=False)
    assert [d["tokens"] for d in manifest["datasets"]] == [d["tokens"] for d in uninterrupted["datasets"]]
    for role in ("pos", "neg"):
        with open_covariances(out, Role.parse(role)) as resumed, open_covariances(tmp_path / "straight", Role.parse(role)) as straight:
            for key in straight.keys():
                expected = straight.get(key)  # float32 pending sums flushed at other moments: float tolerance
                torch.testing.assert_close(resumed.get(key), expected, rtol=1e-6, atol=1e-7 * expected.abs().max().item())


def test_resume_without_a_checkpoint_says_so(tiny_fp32, data_files, tmp_path):
    with pytest.raises(InputError, match="no calibrate checkpoint to resume"):
        calibrate(str(tiny_fp32), str(data_files["pos"]), str(data_files["neg"]), tmp_path / "c", samples=4, resume=True, progress=False)
    assert not (tmp_path / "c").exists()


def fail_before_the_artefact(monkeypatch) -> None:
    """Every dataset is collected (and checkpointed), then writing the covariance files fails."""

    def broken(*args, **kwargs):
        raise InputError("disk trouble while writing")

    monkeypatch.setattr(sink.CovarianceSink, "close", broken)


def test_a_failed_run_keeps_its_checkpoint_and_a_finished_one_removes_it(tiny_fp32, data_files, tmp_path, monkeypatch):
    out = tmp_path / "c"
    fail_before_the_artefact(monkeypatch)
    with pytest.raises(InputError, match="disk trouble"):
        calibrate(str(tiny_fp32), str(data_files["pos"]), str(data_files["neg"]), out, samples=12, checkpoint_every=2, progress=False)
    state = json.loads((state_root(out) / STATE_FILE).read_text())
    assert state["roles"]["pos"]["complete"] and state["roles"]["neg"]["complete"]
    assert not out.exists()
    monkeypatch.undo()
    manifest = calibrate(str(tiny_fp32), str(data_files["pos"]), str(data_files["neg"]), out, samples=12, checkpoint_every=2,
                         resume=True, progress=False)
    assert manifest["summary"]["resumed_batches"] == {"pos": 2, "neg": 2}  # 12 samples in batches of 8: both sets were done
    assert not state_root(out).exists()


def test_a_damaged_checkpoint_is_refused_with_one_sentence(tiny_fp32, data_files, tmp_path, monkeypatch):
    out = tmp_path / "c"
    fail_before_the_artefact(monkeypatch)
    with pytest.raises(InputError, match="disk trouble"):
        calibrate(str(tiny_fp32), str(data_files["pos"]), str(data_files["neg"]), out, samples=12, checkpoint_every=2, progress=False)
    monkeypatch.undo()
    state = state_root(out) / STATE_FILE
    sums = next(state_root(out).glob("sums-neg-*.safetensors"))
    sums.unlink()
    damaged = tree_digest(state_root(out))
    with pytest.raises(InputError, match=f"damaged \\({sums.name}\\)"):
        calibrate(str(tiny_fp32), str(data_files["pos"]), str(data_files["neg"]), out, samples=12, checkpoint_every=2, resume=True, progress=False)
    assert tree_digest(state_root(out)) == damaged  # refused, and left as it was for the user to look at
    state.write_text("{not json")
    damaged = tree_digest(state_root(out))
    with pytest.raises(InputError, match="damaged \\(state.json\\)"):
        calibrate(str(tiny_fp32), str(data_files["pos"]), str(data_files["neg"]), out, samples=12, checkpoint_every=2, resume=True, progress=False)
    assert tree_digest(state_root(out)) == damaged and not out.exists()
