"""A stage's identity, DVC's run-cache key: the sha256 of its resolved settings, the sha256 of each
input's manifest and the tool's version. A finished stage records it (with the settings) in its
artefact; a later run reuses the artefact only when the identity matches and every file still
hashes to what the artefact recorded."""

from __future__ import annotations

import glob
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import ScloraError
from ..io.atomic import MANIFEST
from ..io.hashing import sha256_file
from ..io.manifest import load_manifest, verify_files
from ..io.manifest_types import PipelineRecord
from .loading import EVAL_FILE

KIND_OF = {"calibrate": "calibration", "init": "init", "train": "train", "merge": "merge"}


@dataclass(frozen=True)
class Expected:
    """What a stage would run with now: its settings, its inputs' manifest hashes, and so its identity."""

    stage: str
    settings: dict[str, Any]
    inputs: dict[str, str]

    @property
    def identity(self) -> str:
        payload = {"stage": self.stage, "settings": self.settings, "inputs": self.inputs, "tool": __version__}
        return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode("utf-8")).hexdigest()

    def record(self) -> dict:
        return {"stage": self.stage, "identity": self.identity, "settings": self.settings, "inputs": self.inputs}


@dataclass(frozen=True)
class Verdict:
    """done (reusable), stale (there, but not for these settings or not intact) or missing, and why."""

    state: str
    reason: str = ""

    @property
    def done(self) -> bool:
        return self.state == "done"


def input_digest(path: Path) -> str:
    """The sha256 of one input: a stage folder's manifest, or a file. An evaluation report also
    records how long it took: the same metrics measured again are the same input, so its timings
    are left out."""
    if (path / MANIFEST).is_file():
        return sha256_file(path / MANIFEST)
    if path.name != EVAL_FILE:
        return sha256_file(path)
    report = json.loads(path.read_text(encoding="utf-8"))
    report.pop("seconds", None)
    return json_digest(report)


def json_digest(document: dict) -> str:
    return hashlib.sha256(json.dumps(document, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def artefact_verdict(directory: Path, stage: str, expected: Expected | None) -> Verdict:
    """The verdict on a stage's output folder; `expected` None: its inputs are not up to date."""
    directory = Path(directory)
    if not (directory / MANIFEST).is_file():
        return Verdict("missing", interrupted_reason(directory))
    try:
        manifest = load_manifest(directory, KIND_OF[stage])
    except ScloraError as exc:
        return Verdict("stale", f"its manifest is unusable ({exc})")
    mismatch = record_mismatch(manifest.pipeline, expected)
    if mismatch:
        return Verdict("stale", mismatch)
    try:
        verify_files(directory, manifest)
    except ScloraError as exc:
        return Verdict("stale", f"tampered or incomplete: {exc}")
    return Verdict("done")


def interrupted_reason(directory: Path) -> str:
    if directory.is_dir() and any(directory.iterdir()):
        return "incomplete: no manifest (an interrupted or failed run)"
    leftovers = glob.glob(str(directory.parent / f".{glob.escape(directory.name)}.tmp-*"))
    return "an interrupted run left only its staging folder" if leftovers else "not run yet"


def record_mismatch(record: PipelineRecord | None, expected: Expected | None) -> str:
    """Why a recorded stage does not match what would run now ("" when it does)."""
    if expected is None:
        return "an earlier stage is not up to date"
    if record is None or record.identity is None:
        return "made without a stage identity (an older tool or another workflow)"
    if record.identity == expected.identity:
        return ""
    changed = changed_settings(record.settings, expected.settings)
    if changed:
        return "settings changed: " + ", ".join(f"{expected.stage}.{key} {old!r} -> {new!r}" for key, old, new in changed)
    inputs = [name for name in expected.inputs if record.inputs.get(name) != expected.inputs[name]]
    if inputs:
        return f"its input changed ({', '.join(inputs)} was re-made)"
    return "made by another sclora-tools version"


def changed_settings(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    return [(key, old.get(key), new.get(key)) for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]


def document_verdict(path: Path, expected: Expected | None) -> Verdict:
    """The verdict on a JSON record (eval.json, push.json) holding a "pipeline" section and a "digest"
    of everything else in it."""
    path = Path(path)
    if not path.is_file():
        return Verdict("missing", "not run yet")
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        return Verdict("stale", f"{path.name} is unreadable ({exc})")
    section = document.get("pipeline") if isinstance(document, dict) else None
    record = PipelineRecord.from_dict(section) if isinstance(section, dict) else None
    mismatch = record_mismatch(record, expected)
    if mismatch:
        return Verdict("stale", mismatch)
    if section.get("digest") != json_digest(without_record(document)):
        return Verdict("stale", f"tampered: {path.name} changed after it was written")
    return Verdict("done")


def without_record(document: dict) -> dict:
    """What a record's digest covers: everything but the pipeline section and the gates (re-checked every run)."""
    return {key: value for key, value in document.items() if key not in ("pipeline", "gates")}


def sealed(document: dict, expected: Expected) -> dict:
    """`document` with its pipeline section: the stage record and the digest of the rest."""
    return {**document, "pipeline": {**expected.record(), "digest": json_digest(without_record(document))}}
