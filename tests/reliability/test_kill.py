"""Kill at any point: each stage that writes (calibrate, init, train, merge, push --to) is started as
a real `sclora` process and SIGKILLed at 10 seeded random moments spread over its run (measured
from the moment it holds its output's lock). Half the runs write a new output, half replace a
complete earlier one. After every kill the output holds nothing, the earlier artefact untouched,
a complete new artefact, or a folder that EVERY later stage refuses with one clean sentence. Then
`sclora STAGE` runs again, as a user would run it, over every output the kills left partial or
empty (all at once: distinct outputs hold distinct locks); each re-run completes its output and
leaves no staging or lock file behind.

Runtime: 30-60 s on a 2-core machine under load (the fork server saves the ~15 s of imports
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

from sclora_tools.cli.app import app
from sclora_tools.io.manifest import load_manifest, verify_files
from tests.chain import tree_digest
from tests.cli.commands import assert_clean_failure, leftovers
from tests.conftest import PUBLISHED
from tests.documents import result_of
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
          ("init", "train", "merge", "eval", "push")),
    Stage("init", "init",
          lambda c, out: ["init", c["calib"], "-o", out, "--beta", "0.9", "--rank", "4", "--json"],
          ("train", "merge", "eval", "push")),
    Stage("train", "train",
          lambda c, out: ["train", c["run"], "-o", out, "--data", c["pos"], *TRAIN, "--json"],
          ("merge", "eval", "push")),
    Stage("merge", "merge",
          lambda c, out: ["merge", c["trained"], "-o", out, "--json"],
          ("eval", "push")),
    Stage("push --to", None,
          lambda c, out: ["push", c["merged"], "--repo-id", "fake-org/killed", "--to", out, "--json"],
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
    found: dict[Path, str] = {}
    killed = 0
    for attempt in range(KILLS):
        output = tmp_path / f"out-{attempt}"
        before = None
        if attempt % 2:  # replace a complete earlier artefact
            shutil.copytree(reference, output)
            before = tree_digest(output)
        returncode = kill_once(forkserver, stage, inputs, output, rng.uniform(0.0, duration))
        killed += returncode == -signal.SIGKILL
        found[output] = "complete" if returncode == 0 else outcome(stage, output, before, reference_digest)
        assert returncode in (0, -signal.SIGKILL), returncode
        assert found[output] != "complete" or is_complete(stage, output, reference_digest)
        if found[output] == "partial":
            assert_every_later_stage_refuses(stage, output, runner, tmp_path)
    seen = Counter(found.values())
    assert killed >= KILLS // 2, f"only {killed} of {KILLS} kills landed while {stage.name} ran: {dict(seen)}"

    left = [output for output, what in found.items() if what in ("nothing", "partial")] or [output]  # at least one re-run
    started = time.monotonic()
    rerun_through_the_cli(forkserver, stage, inputs, left, reference_digest)
    print(f"\n{stage.name}: duration {duration:.2f}s, outcomes {dict(seen)}, killed {killed}, "
          f"{len(left)} re-runs in {time.monotonic() - started:.1f}s")


def rerun_through_the_cli(forkserver, stage: Stage, inputs: dict, outputs: list[Path], reference_digest: dict[str, str]) -> None:
    """`sclora STAGE` again over each output, all at once (distinct outputs, distinct locks): each
    one succeeds, completes its output and removes the killed run's staging and its own lock."""
    children = {output: forkserver.start(stage.argv(inputs, output)) for output in outputs}
    for output, child in children.items():
        assert child.wait() == 0, f"the re-run of {stage.name} over {output.name} failed:\n{child.stderr}"
        result_of(child.stdout, stage.argv(inputs, output)[0])
        assert is_complete(stage, output, reference_digest), f"the re-run of {stage.name} left {output.name} incomplete"
        assert leftovers(output) == [], f"a re-run of {stage.name} left {leftovers(output)}"
