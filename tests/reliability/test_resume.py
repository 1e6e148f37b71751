"""`sclora train --resume` after a SIGKILL finishes with the adapter and the loss history of an
uninterrupted run (within float tolerance); a checkpoint the kill cut short is skipped; checkpoints of
a run with other settings, other data or another init are refused with one sentence, changing
nothing. (calibrate's --resume is tested with its engine, tests/calibration/.)
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from sclora_tools import train
from sclora_tools.cli.app import app
from sclora_tools.errors import InputError, MismatchError
from sclora_tools.training.resume import IDENTITY, SEAL
from tests.chain import tree_digest
from tests.cli.commands import assert_clean_failure
from tests.conftest import PUBLISHED
from tests.reliability.processes import wait_until_started

SEED = 14
SETTINGS = {"samples": 8, "max_steps": 24, "save_steps": 2, "lr": 5e-3, "batch_size": 4, "max_length": 48}


def cli_options(settings: dict) -> list[str]:
    return [part for key, value in settings.items() for part in (f"--{key.replace('_', '-')}", str(value))]


@pytest.fixture(scope="module")
def chain(tiny_chain):
    return tiny_chain(**PUBLISHED)


@pytest.fixture(scope="module")
def reference(chain, data_files, tmp_path_factory) -> Path:
    """The uninterrupted run."""
    output = tmp_path_factory.mktemp("resume") / "reference"
    train(chain.run, output, data_argument=str(data_files["pos"]), progress=False, **SETTINGS)
    return output


def assert_same_training(resumed: Path, reference: Path) -> None:
    expected, got = load_file(reference / "adapter" / "adapter_model.safetensors"), load_file(resumed / "adapter" / "adapter_model.safetensors")
    assert set(got) == set(expected)
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=1e-5, atol=1e-6)
    losses = [(h["step"], h["loss"]) for h in json.loads((resumed / "loss_log.json").read_text())]
    reference_losses = [(h["step"], h["loss"]) for h in json.loads((reference / "loss_log.json").read_text())]
    assert [step for step, _ in losses] == [step for step, _ in reference_losses] == list(range(1, SETTINGS["max_steps"] + 1))
    assert [loss for _, loss in losses] == pytest.approx([loss for _, loss in reference_losses], rel=1e-5)


def sealed_steps(output: Path) -> list[int]:
    return sorted(int(p.parent.name.split("-")[1]) for p in (output / "checkpoints").glob(f"checkpoint-*/{SEAL}"))


def wait_for_a_sealed_checkpoint(child, output: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not sealed_steps(output) and child.poll() is None:
        assert time.monotonic() < deadline, child.stderr
        time.sleep(0.01)


def test_resume_after_sigkill_equals_an_uninterrupted_run(forkserver, chain, data_files, reference, tmp_path):
    rng = random.Random(SEED)
    resumed_from = []
    for attempt in range(3):
        output = tmp_path / f"killed-{attempt}"
        argv = ["train", chain.run, "-o", output, "--data", data_files["pos"], *cli_options(SETTINGS), "--json"]
        child = forkserver.start(argv)
        assert wait_until_started(child, output)
        wait_for_a_sealed_checkpoint(child, output)
        time.sleep(rng.uniform(0.0, 0.5))  # a random moment of the ~20 steps left (a few seconds on the tiny model)
        child.signal(signal.SIGKILL)
        assert child.wait() == -signal.SIGKILL, "the run finished before the kill; the test proves nothing"
        assert not (output / "manifest.json").exists()
        resumed_from.append(max(sealed_steps(output)))
        train(chain.run, output, data_argument=str(data_files["pos"]), resume=True, progress=False, **SETTINGS)
        assert_same_training(output, reference)
    assert all(0 < step < SETTINGS["max_steps"] for step in resumed_from), resumed_from


def test_a_checkpoint_cut_short_by_a_kill_is_skipped(chain, data_files, reference, tmp_path):
    output = Path(shutil.copytree(reference, tmp_path / "cut-short"))
    newest = output / "checkpoints" / f"checkpoint-{SETTINGS['max_steps']}"
    weights = newest / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # what a kill while saving leaves
    train(chain.run, output, data_argument=str(data_files["pos"]), resume=True, progress=False, **SETTINGS)
    assert sealed_steps(output) == [SETTINGS["max_steps"] - 2, SETTINGS["max_steps"]]  # rebuilt from the one before
    assert_same_training(output, reference)


OTHER_SETTINGS = [
    ({"lr": 1e-3}, "--lr"),
    ({"batch_size": 2}, "--batch-size"),
    ({"seed": 1}, "--seed"),
    ({"samples": 6}, "--samples"),
    ({"freeze_b": True}, "--freeze-b"),
]


@pytest.mark.parametrize("change,phrase", OTHER_SETTINGS, ids=[phrase for _, phrase in OTHER_SETTINGS])
def test_resume_refuses_other_settings_and_changes_nothing(change, phrase, chain, data_files, reference, tmp_path):
    output = Path(shutil.copytree(reference, tmp_path / "other"))
    before = tree_digest(output)
    with pytest.raises(MismatchError, match=phrase):
        train(chain.run, output, data_argument=str(data_files["pos"]), resume=True, progress=False, **{**SETTINGS, **change})
    assert tree_digest(output) == before


def test_resume_refuses_other_data_and_another_init_run(tiny_chain, chain, data_files, reference, runner, tmp_path):
    output = Path(shutil.copytree(reference, tmp_path / "other"))
    before = tree_digest(output)
    other_data = tmp_path / "pos-edited.jsonl"
    other_data.write_text(data_files["pos"].read_text().replace("summarize", "summarise"))
    result = runner.invoke(app, [str(a) for a in ["train", chain.run, "-o", output, "--data", other_data, *cli_options(SETTINGS),
                                                  "--resume"]])
    assert_clean_failure(result, None, "the training texts", "drop --resume", code=MismatchError.exit_code)
    other_run = tiny_chain(calibrate=PUBLISHED["calibrate"], init={**PUBLISHED["init"], "beta": 0.5}).run
    with pytest.raises(MismatchError, match="the init run"):
        train(other_run, output, data_argument=str(data_files["pos"]), resume=True, progress=False, **SETTINGS)
    assert tree_digest(output) == before


def test_resume_refuses_checkpoints_that_do_not_say_which_run_made_them(chain, data_files, reference, tmp_path):
    output = Path(shutil.copytree(reference, tmp_path / "anonymous"))
    (output / "checkpoints" / IDENTITY).unlink()
    with pytest.raises(InputError, match="record no run settings"):
        train(chain.run, output, data_argument=str(data_files["pos"]), resume=True, progress=False, **SETTINGS)
