"""The training checkpoints behind `sclora train --resume`: which run they belong to, which are whole.

`checkpoints/sclora_run.json` records the run's identity (every training setting, the sha256 of the
training texts, the init artefact's manifest); `--resume` refuses checkpoints of another identity,
except for --max-steps and --epochs, which may grow to extend a run.
The Trainer writes checkpoint-N/ in place, so a kill while it saves leaves a partial one: once it
has written one, `seal` records the sha256 of each of its files and the loss history so far in
checkpoint-N/sclora_checkpoint.json, written last. `--resume` continues from the newest checkpoint
whose seal verifies and removes the others that do not.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from .. import ui
from ..errors import InputError, MismatchError
from ..io.atomic import write_json
from ..io.hashing import sha256_file

IDENTITY = "sclora_run.json"
LENGTH_SETTINGS = ("max_steps", "epochs")  # may change on --resume: how far to train, not how
SEAL = "sclora_checkpoint.json"
PREFIX = "checkpoint-"


@dataclass(frozen=True)
class Checkpoint:
    """A sealed checkpoint: where it is, its step, and the loss history up to it."""

    path: Path
    step: int
    history: list[dict]


def run_identity(settings: dict, texts_sha256: str | None, init_manifest: Path) -> dict:
    """What a run's checkpoints depend on, as stored (JSON round trip, so it compares with a file)."""
    identity = {"settings": settings, "texts_sha256": texts_sha256, "init_manifest_sha256": sha256_file(init_manifest)}
    return json.loads(json.dumps(identity))


def starting_point(directory: Path, identity: dict, resume: bool) -> Checkpoint | None:
    """For --resume, check the identity and return the newest sealed checkpoint (None, with a
    warning, when there is none yet); a fresh run clears old checkpoints. Then record the identity."""
    recorded = directory / IDENTITY
    if not resume:
        shutil.rmtree(directory, ignore_errors=True)
    elif recorded.is_file():
        check_identity(directory, json.loads(recorded.read_text(encoding="utf-8")), identity)
    elif any(directory.glob(f"{PREFIX}*")):
        raise InputError(f"the checkpoints in {directory} record no run settings (an older sclora wrote them), so resuming "
                         "could mix two runs; drop --resume to start over.")
    directory.mkdir(parents=True, exist_ok=True)
    write_json(recorded, identity)
    found = latest_sealed(directory) if resume else None
    if resume and found is None:
        ui.warn(f"no complete checkpoint in {directory}; training starts from the beginning.")
    return found


def sealed_start(directory: Path, resume: bool) -> Checkpoint | None:
    """What the other ranks of a distributed run resume from, once rank 0 has run `starting_point`
    (which removed the checkpoints that do not verify): the newest sealed one, read only."""
    return latest_sealed(directory, remove_unsealed=False) if resume else None


def check_identity(directory: Path, recorded: dict, current: dict) -> None:
    before = recorded.get("settings") if isinstance(recorded.get("settings"), dict) else {}
    differences = [f"--{key.replace('_', '-')} {before.get(key)!r} (now {value!r})"
                   for key, value in current["settings"].items() if before.get(key) != value and key not in LENGTH_SETTINGS]
    if recorded.get("texts_sha256") != current["texts_sha256"]:
        differences.append("the training texts")
    if recorded.get("init_manifest_sha256") != current["init_manifest_sha256"]:
        differences.append("the init run")
    if differences:
        raise MismatchError(f"the checkpoints in {directory} belong to a run with other settings or data ({'; '.join(differences)}); "
                            "resume with the same options and data, or drop --resume to start over.")


def seal(checkpoint: Path, history: list[dict]) -> None:
    """Record the files of a checkpoint the Trainer has finished writing (the seal last)."""
    files = {path.relative_to(checkpoint).as_posix(): sha256_file(path)
             for path in sorted(checkpoint.rglob("*")) if path.is_file() and path.name != SEAL}
    write_json(checkpoint / SEAL, {"files": files, "history": history})


def latest_sealed(directory: Path, remove_unsealed: bool = True) -> Checkpoint | None:
    """The newest checkpoint whose seal verifies; newer ones that do not (a kill while saving) are
    removed, unless `remove_unsealed` is off."""
    for path in sorted(directory.glob(f"{PREFIX}*"), key=step_of, reverse=True):
        history = verified_history(path)
        if history is not None:
            return Checkpoint(path, step_of(path), history)
        if remove_unsealed:
            ui.warn(f"{path.name} is incomplete or altered (the run stopped while saving it); it was removed.")
            shutil.rmtree(path, ignore_errors=True)
    return None


def step_of(path: Path) -> int:
    suffix = path.name[len(PREFIX):]
    return int(suffix) if suffix.isdigit() else -1


def verified_history(checkpoint: Path) -> list[dict] | None:
    """The history in a checkpoint's seal if every file it lists is there with its sha256, else None."""
    try:
        record = json.loads((checkpoint / SEAL).read_text(encoding="utf-8"))
        intact = all(sha256_file(checkpoint / name) == digest for name, digest in record["files"].items())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return list(record.get("history") or []) if intact and record["files"] else None
