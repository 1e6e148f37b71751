"""manifest.json beside every artefact: what made it, from what, with which settings, and the
sha256 of every file written. The next stage reads it back with `load_manifest`, as a typed
Manifest (its records: manifest_types.py, its settings: manifest_settings.py); nobody re-types a
setting."""

from __future__ import annotations

import contextlib
import contextvars
import datetime as _dt
import json
import shlex
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import __version__
from ..errors import InputError, MismatchError, VerificationError
from . import hash_cache
from .atomic import MANIFEST, write_json
from .hashing import sha256_file
from .manifest_settings import CONFIG_TYPES, CalibrationConfig, InitConfig, SweepConfig
from .manifest_types import KINDS, SHORT_NAMES, SUMMARY_TYPES, DatasetRecord, ModelRecord, PipelineRecord, Role, Summary, VerificationRecord, as_tuple

SCHEMA_VERSION = 1
MADE_BY = {"calibration": "calibrate", "init": "init", "train": "train", "merge": "merge", "sweep": "sweep"}
# The workspace stage being run, if any: new_manifest records it as the manifest's "pipeline" section.
RUNNING_STAGE: contextvars.ContextVar[dict | None] = contextvars.ContextVar("running_stage", default=None)


@dataclass(frozen=True)
class Parent:
    """An artefact this one was made from: its kind, where it was, and its manifest as embedded."""

    kind: str
    path: Path
    manifest: Manifest


@dataclass(frozen=True)
class Manifest:
    """A manifest read back: typed sections, and `raw`, the document as stored (unknown keys
    included), for embedding in a child manifest and for --json output."""

    raw: dict = field(repr=False)
    kind: str
    model: ModelRecord
    config: CalibrationConfig | InitConfig | SweepConfig
    datasets: tuple[DatasetRecord, ...]
    parents: tuple[Parent, ...]
    files: dict[str, str]
    summary: Summary
    verification: VerificationRecord | None

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> Manifest:
        raw = dict(raw)
        kind = str(raw.get("kind", "?"))
        verification = raw.get("verification")
        return cls(
            raw=raw,
            kind=kind,
            model=ModelRecord.from_dict(raw.get("model")),
            config=CONFIG_TYPES.get(kind, InitConfig).from_dict(raw.get("config")),
            datasets=tuple(DatasetRecord.from_dict(d) for d in as_tuple(raw.get("datasets")) if has_role(d)),
            parents=tuple(parent_of(p) for p in as_tuple(raw.get("parents")) if is_parent(p)),
            files=dict(raw.get("files") or {}),
            summary=SUMMARY_TYPES.get(kind, Summary).from_dict(raw.get("summary")),
            verification=VerificationRecord.from_dict(verification)
            if isinstance(verification, Mapping) and "passed" in verification else None,
        )

    @property
    def command(self) -> str:
        return str(self.raw.get("command") or "")

    @property
    def tool_version(self) -> str | None:
        tool = self.raw.get("tool")
        return tool.get("version") if isinstance(tool, Mapping) else None

    @property
    def source_tensors(self) -> dict[str, str]:
        """init: the sha256 of every tensor of the source checkpoint."""
        return dict(self.raw.get("source_tensors") or {})

    @property
    def pipeline(self) -> PipelineRecord | None:
        """The workspace stage record (settings and identity), if a workspace command made it."""
        record = self.raw.get("pipeline")
        return PipelineRecord.from_dict(record) if isinstance(record, Mapping) else None

    def dataset(self, role: Role) -> DatasetRecord | None:
        """The first dataset recorded with `role`."""
        return next((d for d in self.datasets if d.role is role), None)

    def datasets_with(self, *roles: Role) -> list[DatasetRecord]:
        return [d for d in self.datasets if d.role in roles]

    def parent(self, kind: str) -> Parent | None:
        return next((p for p in self.parents if p.kind == kind), None)

    def lineage(self) -> list[Manifest]:
        """This manifest and every ancestor, one per kind, ordered calibration, init, train, merge."""
        found: dict[str, Manifest] = {}

        def walk(node: Manifest) -> None:
            found.setdefault(node.kind, node)
            for parent in node.parents:
                walk(parent.manifest)

        walk(self)
        return [found[kind] for kind in KINDS if kind in found]


def has_role(entry: Any) -> bool:
    """A dataset record whose role this version knows (others stay in `raw` only)."""
    return isinstance(entry, Mapping) and entry.get("role") in SHORT_NAMES


def is_parent(entry: Any) -> bool:
    return isinstance(entry, Mapping) and isinstance(entry.get("manifest"), Mapping)


def parent_of(entry: Mapping[str, Any]) -> Parent:
    manifest = Manifest.from_dict(entry["manifest"])
    return Parent(kind=str(entry.get("kind") or manifest.kind), path=Path(str(entry.get("path") or "")), manifest=manifest)


def command_line() -> str:
    return " ".join(shlex.quote(part) for part in [Path(sys.argv[0]).name, *sys.argv[1:]])


def new_manifest(kind: str, **sections: object) -> dict:
    """A manifest skeleton: schema, tool, time, command, then the stage's sections."""
    if kind not in KINDS:
        raise ValueError(f"unknown artefact kind {kind!r}")
    return {
        "schema_version": SCHEMA_VERSION,
        "kind": kind,
        "tool": {"name": "sclora-tools", "version": __version__},
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": command_line(),
        **sections,
        **({"pipeline": RUNNING_STAGE.get()} if RUNNING_STAGE.get() is not None else {}),
    }


@contextlib.contextmanager
def recording_stage(record: dict) -> Iterator[None]:
    """Every manifest written inside the block records `record` (a PipelineRecord's dict)."""
    token = RUNNING_STAGE.set(record)
    try:
        yield
    finally:
        RUNNING_STAGE.reset(token)


def file_hashes(directory: Path, exclude: tuple[str, ...] = (), known: Mapping[Path, str] | None = None) -> dict[str, str]:
    """sha256 of every file below `directory` except the manifest (and `exclude` prefixes);
    `known` gives the hashes of files the stage hashed as it wrote them (by resolved path)."""
    directory, known = Path(directory), known or {}
    hashes = {}
    for path in sorted(directory.rglob("*")):
        relative = path.relative_to(directory).as_posix()
        if path.is_file() and relative != MANIFEST and not relative.startswith(exclude):
            hashes[relative] = known.get(path.resolve()) or sha256_file(path)
    return hashes


def write_manifest(directory: Path, manifest: dict, exclude: tuple[str, ...] = (), known: Mapping[Path, str] | None = None) -> dict:
    """Record the hashes of the files in `directory`, then write manifest.json last."""
    manifest = {**manifest, "files": file_hashes(directory, exclude, known)}
    write_json(Path(directory) / MANIFEST, manifest)
    return manifest


def parent_entry(directory: Path, manifest: Manifest) -> dict:
    """How a child manifest records the artefact it was made from: its whole manifest embedded."""
    return {"kind": manifest.kind, "path": str(Path(directory).resolve()), "manifest": manifest.raw}


def load_manifest(directory: Path, kind: str | tuple[str, ...]) -> Manifest:
    """The typed manifest of an artefact of the expected kind(s)."""
    return Manifest.from_dict(read_manifest(directory, kind))


def read_manifest(directory: Path, kind: str | tuple[str, ...]) -> dict:
    """Read and check the manifest of an artefact of the expected kind(s), as stored."""
    kinds = (kind,) if isinstance(kind, str) else kind
    path = Path(directory) / MANIFEST
    if not path.is_file():
        raise InputError(f"{directory} has no {MANIFEST}; pass the output directory of `sclora {MADE_BY[kinds[0]]}`.")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{path} is not valid JSON ({exc.msg}); re-run the stage that wrote it.") from exc
    if manifest.get("kind") not in kinds:
        raise MismatchError(
            f"{directory} holds a {manifest.get('kind')!r} artefact, expected {' or '.join(kinds)}; pass the right directory."
        )
    if manifest.get("schema_version", 0) > SCHEMA_VERSION:
        raise MismatchError(f"{directory} was written by a newer sclora-tools; upgrade sclora-tools to read it.")
    return manifest


def init_run_dir(directory: Path, manifest: Manifest) -> Path:
    """The directory of the init run behind an init or train artefact."""
    if manifest.kind == "init":
        return Path(directory)
    parent = manifest.parent("init")
    if parent is None:
        raise MismatchError(f"{Path(directory) / MANIFEST} records no init run it was trained from; re-run train.")
    return parent.path


def verify_files(directory: Path, manifest: Manifest, only: tuple[str, ...] | None = None) -> None:
    """Raise VerificationError if any file recorded in the manifest is missing or changed. Hashes of
    files unchanged since an earlier check are remembered (io.hash_cache): at 7B a stage otherwise
    re-reads its parent's 10-30 GB on every run."""
    expected = {Path(directory) / relative: digest for relative, digest in manifest.files.items()
                if only is None or relative.startswith(only)}
    for path in expected:
        if not path.is_file():
            raise VerificationError(f"{path} is missing; the artefact is incomplete, re-create it with its stage.")
    actual = hash_cache.sha256_files(list(expected), hash_cache.cache_file())
    for path, digest in expected.items():
        if actual[path] != digest:
            raise VerificationError(
                f"{path} does not match the sha256 in {Path(directory) / MANIFEST}; it was modified, re-create the artefact."
            )
