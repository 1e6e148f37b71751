"""Integrity: every stage checks the sha256 of each input file it reads against the manifest of the
artefact it comes from, before it reads any of them. One flipped byte in any of those files stops
init, train, merge, eval and push with exit 5 and a sentence naming the file, before the stage's
first loader runs (each loader is replaced by a tripwire; without damage the stage reaches it,
which shows the tripwire sits where the first read happens)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sclora_tools.cli.app import app
from sclora_tools.errors import EXIT_INTERNAL, VerificationError
from sclora_tools.io.manifest import MANIFEST
from tests.cli.commands import assert_clean_failure
from tests.conftest import PUBLISHED
from tests.reliability.damage import edit_manifest, flip_byte


class ReachedTheLoaderError(Exception):
    """Raised by a tripwire in place of a stage's first loader."""


@pytest.fixture(scope="module")
def chain(tiny_chain):
    return tiny_chain(**PUBLISHED)


@pytest.fixture
def copies(chain, tmp_path) -> dict[str, Path]:
    """A private copy of the chain whose manifests point at each other's copies."""
    names = {"calib": chain.calib, "run": chain.run, "trained": chain.trained, "merged": chain.merged}
    copied = {name: Path(shutil.copytree(source, tmp_path / name)) for name, source in names.items()}
    edit_manifest(copied["trained"], lambda manifest: manifest["parents"][0].update(path=str(copied["run"])))
    edit_manifest(copied["merged"], lambda manifest: manifest["parents"][0].update(path=str(copied["trained"])))
    return copied


def recorded_files(artefact: Path, prefixes: tuple[str, ...] | None) -> list[str]:
    files = json.loads((artefact / MANIFEST).read_text())["files"]
    return sorted(name for name in files if prefixes is None or name.startswith(prefixes))


# stage -> (its command on the copies, [(input artefact, the recorded files it reads)], its first loader)
STAGES = {
    "init": (lambda c, out: ["init", c["calib"], "-o", out, "--rank", "4"], [("calib", None)],
             "sclora_tools.stages.init.write_residual"),
    "train": (lambda c, out: ["train", c["run"], "-o", out, "--max-steps", "1"], [("run", ("residual/", "adapter/"))],
              "sclora_tools.models.load_tokenizer"),
    "merge": (lambda c, out: ["merge", c["trained"], "-o", out], [("run", None), ("trained", None)],
              "sclora_tools.stages.merge.read_adapter"),
    "eval (merge output)": (lambda c, out: ["eval", c["merged"], "--samples", "1", "-o", out / "eval.json"], [("merged", ("merged/",))],
                            "sclora_tools.stages.evaluate.load_for_eval"),
    "eval (train output)": (lambda c, out: ["eval", c["trained"], "--samples", "1", "-o", out / "eval.json"],
                            [("trained", ("adapter/",)), ("run", ("residual/",))], "sclora_tools.stages.evaluate.load_for_eval"),
    "push": (lambda c, out: ["push", c["merged"], "--repo-id", "fake-org/x", "--to", out], [("merged", None)],
             "sclora_tools.stages.push.render_card"),
}


@pytest.mark.parametrize("stage", list(STAGES), ids=list(STAGES))
def test_one_flipped_byte_in_any_input_is_caught_before_use(stage, copies, runner, monkeypatch, tmp_path):
    command, inputs, first_loader = STAGES[stage]

    def tripwire(*args, **kwargs):
        raise ReachedTheLoaderError(first_loader)

    monkeypatch.setattr(first_loader, tripwire)
    output = tmp_path / "out"
    argv = [str(part) for part in command(copies, output)]
    untouched = runner.invoke(app, argv)
    assert untouched.exit_code == EXIT_INTERNAL and "ReachedTheLoaderError" in untouched.stderr, untouched.output
    checked = 0
    for artefact, prefixes in inputs:
        for relative in recorded_files(copies[artefact], prefixes):
            damaged = flip_byte(copies[artefact] / relative)
            try:
                result = runner.invoke(app, argv)
            finally:
                flip_byte(damaged)  # flipping the same byte back restores the file
            assert_clean_failure(result, output, relative, "does not match the sha256", code=VerificationError.exit_code)
            checked += 1
    assert checked >= 2, f"{stage} reads too few recorded files to prove anything"
