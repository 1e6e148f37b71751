"""Where each stage of a workspace reads and writes, what it would run with now, and whether its
artefact is done, stale (and why) or missing: what `sclora status` shows and `sclora run` skips on.

Each stage finds its input through the manifests, never by file times: init reads the calibration,
train the init, merge the train output when that was trained from the current init (else the init),
eval and push the merge."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import InputError, ScloraError
from ..io.atomic import MANIFEST
from ..io.manifest import load_manifest
from .identity import KIND_OF, Expected, Verdict, artefact_verdict, document_verdict, input_digest
from .loading import Workspace

COMMAND_OF = {"calibrate": "sclora calibrate", "init": "sclora init", "train": "sclora train", "merge": "sclora merge",
              "eval": "sclora eval", "push": "sclora push"}


@dataclass(frozen=True)
class StageStatus:
    stage: str
    state: str
    reason: str
    output: Path

    def to_dict(self) -> dict:
        return {"stage": self.stage, "state": self.state, "reason": self.reason, "output": str(self.output)}


def output_of(workspace: Workspace, stage: str) -> Path:
    if stage == "eval":
        return workspace.eval_file
    if stage == "push":
        return workspace.push_record
    return workspace.folder(stage)


def merge_source(workspace: Workspace, in_pipeline: bool) -> str:
    """train or init: the stage whose output merge takes."""
    if in_pipeline:
        return "train" if "train" in workspace.config.stages else "init"
    return "train" if trained_from_current_init(workspace) else "init"


def trained_from_current_init(workspace: Workspace) -> bool:
    trained, initialised = workspace.folder("train"), workspace.folder("init")
    if not (trained / MANIFEST).is_file() or not (initialised / MANIFEST).is_file():
        return (trained / MANIFEST).is_file()
    try:
        parent = load_manifest(trained, "train").parent("init")
        return parent is not None and parent.manifest.raw == load_manifest(initialised, "init").raw
    except ScloraError:
        return False


def input_stages(workspace: Workspace, stage: str, in_pipeline: bool = True) -> tuple[str, ...]:
    """The stages whose outputs `stage` reads."""
    if stage == "merge":
        return (merge_source(workspace, in_pipeline),)
    if stage == "push":
        return ("merge", "eval") if in_pipeline and "eval" in workspace.config.stages else ("merge",)
    previous = {"calibrate": (), "init": ("calibrate",), "train": ("init",), "eval": ("merge",)}
    return previous[stage]


def input_folder(workspace: Workspace, stage: str, in_pipeline: bool = False) -> Path:
    """The folder a stage reads, found through the manifests; a clear error when it is not there yet."""
    source = input_stages(workspace, stage, in_pipeline)[0]
    folder = workspace.folder(source)
    if not (folder / MANIFEST).is_file():
        raise InputError(f"no {source} output in {folder}; run `{COMMAND_OF[source]}` first (or pass the input directory).")
    return folder


def identity_settings(workspace: Workspace, stage: str) -> dict:
    """The settings a stage's identity covers: gates are re-checked on every run, so not eval's."""
    settings = workspace.settings(stage)
    if stage == "eval":
        settings.pop("gates", None)
    return settings


def expected(workspace: Workspace, stage: str, in_pipeline: bool = True) -> Expected | None:
    """What `stage` would run with now; None when one of its inputs is not there."""
    inputs = {}
    for source in input_stages(workspace, stage, in_pipeline):
        path = output_of(workspace, source)
        marker = path / MANIFEST if source in KIND_OF else path
        if not marker.is_file():
            return None
        inputs[source] = input_digest(path)
    return Expected(stage, identity_settings(workspace, stage), inputs)


def verdict(workspace: Workspace, stage: str, wanted: Expected | None) -> Verdict:
    output = output_of(workspace, stage)
    if stage in KIND_OF:
        return artefact_verdict(output, stage, wanted)
    found = document_verdict(output, wanted)
    if found.done and stage == "push" and workspace.push_to is not None and not workspace.push_to.is_dir():
        return Verdict("stale", f"the published folder {workspace.push_to} is gone")
    return found


def status(workspace: Workspace) -> list[StageStatus]:
    """Every declared stage, in order; a stage after one that is not done cannot be done either."""
    rows: list[StageStatus] = []
    for stage in workspace.config.stages:
        behind = next((row for row in rows if row.state != "done"), None)
        found = verdict(workspace, stage, expected(workspace, stage) if behind is None else None)
        if behind is not None and found.state == "stale":
            found = Verdict("stale", f"{behind.stage} is {behind.state}, so this will re-run")
        rows.append(StageStatus(stage, found.state, found.reason, output_of(workspace, stage)))
    return rows
