"""Kill at any point: each stage that writes (calibrate, init, train, merge, push --to) is started as
a real `sclora` process and SIGKILLed at 10 seeded random moments spread over its run (measured
from the moment it holds its output's lock). Half the runs write a new output, half replace a
complete earlier one. After every kill the output holds nothing, the earlier artefact untouched,
a complete new artefact, or a folder that EVERY later stage refuses with one clean sentence; then
a re-run over the leftovers succeeds and leaves no staging or lock file behind.

Runtime: about 4 minutes on a 2-core machine under load (the fork server saves the ~15 s of imports
per process), so the module is marked slow.
"""

from __future__ import annotations

import random
import shutil
import signal
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from sclora_tools import calibrate, init, merge, push, train
from sclora_tools.cli.app import app
from sclora_tools.io.manifest import load_manifest, verify_files
from tests.chain import tree_digest
from tests.cli.commands import assert_clean_failure, leftovers
from tests.conftest import PUBLISHED
from tests.reliability.processes import wait_until_started

pytestmark = pytest.mark.slow

KILLS = 10
SEED = 14
TRAIN = ["--samples", "8", "--max-steps", "6", "--save-steps", "2", "--lr", "5e-3", "--batch-size", "4", "--max-length", "48"]


@dataclass(frozen=True)
class Stage:
    """How to run one stage on the shared chain, what it writes, and who reads that next."""

    name: str
    kind: str | None  # the manifest kind it writes (None: push --to writes a publishable folder)
    argv: Callable[[dict, Path], list]  # (inputs, output) -> sclora arguments
    rerun: Callable[[dict, Path], object]  # the same stage through the Python API
    readers: tuple[str, ...]  # the later stages that must refuse a partial output


def later_stage_argv(stage: str, partial: Path, elsewhere: Path) -> list:
    return {
        "init": ["init", partial, "-o", elsewhere, "--rank", "4"],
        "train": ["train", partial, "-o", elsewhere, "--max-steps", "1"],
        "merge": ["merge", partial, "-o", elsewhere],
        "eval": ["eval", partial, "--samples", "1", "--max-new-tokens", "1", "-o", elsewhere / "eval.json"],
        "push": ["push", partial, "--repo-id", "fake-org/never", "--to", elsewhere],
    }[stage]


STAGES = [
    Stage("calibrate", "calibration",
          lambda c, out: ["calibrate", c["model"], "--pos", c["pos"], "--neg", c["neg"], "-o", out, "--samples", "8",
                          "--max-length", "24", "--batch-size", "8", "--json"],
          lambda c, out: calibrate(str(c["model"]), str(c["pos"]), str(c["neg"]), out, progress=False, **PUBLISHED["calibrate"]),
          ("init", "train", "merge", "eval", "push")),
    Stage("init", "init",
          lambda c, out: ["init", c["calib"], "-o", out, "--beta", "0.9", "--rank", "4", "--json"],
          lambda c, out: init(c["calib"], out, progress=False, **PUBLISHED["init"]),
          ("train", "merge", "eval", "push")),
    Stage("train", "train",
          lambda c, out: ["train", c["run"], "-o", out, "--data", c["pos"], *TRAIN, "--json"],
          lambda c, out: train(c["run"], out, data_argument=str(c["pos"]), samples=8, max_steps=6, save_steps=2, lr=5e-3,
                               batch_size=4, max_length=48, progress=False),
          ("merge", "eval", "push")),
    Stage("merge", "merge",
          lambda c, out: ["merge", c["trained"], "-o", out, "--json"],
          lambda c, out: merge(c["trained"], out, progress=False),
          ("eval", "push")),
    Stage("push --to", None,
          lambda c, out: ["push", c["merged"], "--repo-id", "fake-org/killed", "--to", out, "--json"],
          lambda c, out: push(c["merged"], "fake-org/killed", to=out, progress=False),
          ()),
]


@pytest.fixture(scope="module")
def inputs(tiny_chain, data_files) -> dict:
    chain = tiny_chain(**PUBLISHED)
    return {"model": chain.model, "pos": data_files["pos"], "neg": data_files["neg"], "calib": chain.calib, "run": chain.run,
            "trained": chain.trained, "merged": chain.merged}


def is_complete(stage: Stage, output: Path, reference: dict[str, str]) -> bool:
    if stage.kind is None:  # a publishable folder is deterministic: the very files of the reference run
        return tree_digest(output) == reference
    try:
        verify_files(output, load_manifest(output, stage.kind))
    except Exception:  # noqa: BLE001 - anything that is not a verified artefact is not complete
        return False
    return True


def outcome(stage: Stage, output: Path, before: dict[str, str] | None, reference: dict[str, str]) -> str:
    if not output.exists():
        return "nothing"
    if before is not None and tree_digest(output) == before:
        return "previous"
    return "complete" if is_complete(stage, output, reference) else "partial"


def assert_every_later_stage_refuses(stage: Stage, partial: Path, runner, tmp_path: Path) -> None:
    assert stage.readers, f"{stage.name} left a partial folder {partial} that looks like an artefact"
    for reader in stage.readers:
        elsewhere = tmp_path / f"never-{reader}"
        result = runner.invoke(app, [str(a) for a in later_stage_argv(reader, partial, elsewhere)])
        assert_clean_failure(result, elsewhere)


def kill_once(forkserver, stage: Stage, inputs: dict, output: Path, delay: float) -> int:
    child = forkserver.start(stage.argv(inputs, output))
    if wait_until_started(child, output):
        time.sleep(delay)
        child.signal(signal.SIGKILL)
    return child.wait()


@pytest.mark.parametrize("stage", STAGES, ids=[s.name for s in STAGES])
def test_sigkill_at_random_moments_never_leaves_an_artefact_that_looks_complete(stage, forkserver, inputs, runner, tmp_path):
    reference = tmp_path / "reference"
    child = forkserver.start(stage.argv(inputs, reference))
    assert wait_until_started(child, reference)
    started = time.monotonic()
    assert child.wait() == 0, child.stderr
    duration = time.monotonic() - started
    reference_digest = tree_digest(reference)
    assert is_complete(stage, reference, reference_digest)

    rng = random.Random(f"{SEED}-{stage.name}")
    seen: Counter[str] = Counter()
    killed = 0
    for attempt in range(KILLS):
        output = tmp_path / f"out-{attempt}"
        before = None
        if attempt % 2:  # replace a complete earlier artefact
            shutil.copytree(reference, output)
            before = tree_digest(output)
        returncode = kill_once(forkserver, stage, inputs, output, rng.uniform(0.0, duration))
        killed += returncode == -signal.SIGKILL
        found = "complete" if returncode == 0 else outcome(stage, output, before, reference_digest)
        assert returncode in (0, -signal.SIGKILL), returncode
        assert found != "complete" or is_complete(stage, output, reference_digest)
        if found == "partial":
            assert_every_later_stage_refuses(stage, output, runner, tmp_path)
        seen[found] += 1
    print(f"\n{stage.name}: duration {duration:.2f}s, outcomes {dict(seen)}, killed {killed}")
    assert killed >= KILLS // 2, f"only {killed} of {KILLS} kills landed while {stage.name} ran: {dict(seen)}"

    for attempt in (KILLS - 2, KILLS - 1):  # a re-run over what the kills left succeeds and cleans up
        output = tmp_path / f"out-{attempt}"
        stage.rerun(inputs, output)
        assert is_complete(stage, output, reference_digest)
        assert leftovers(output) == [], f"a re-run of {stage.name} left {leftovers(output)}"
