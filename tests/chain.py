"""The tiny pipeline chain, calibrate -> init -> train -> merge, built once per setting and shared.

`ChainFactory` (the session fixture `tiny_chain` in tests/conftest.py) caches every stage by its
settings and those of the stages before it, so two modules asking for the same calibration share
it, and a module asking for another rank reuses the calibration and builds only its own init.

Cached artefacts are read-only by contract: a test that changes one works on `fresh_copy(...)`.
The factory records a digest of every shared artefact it builds, and tests/conftest.py fails the
session at its end if a test wrote into one (`changed_artefacts`). A module that must write into its
artefacts by design (`sclora eval` puts RUN/eval.json next to a run) passes `owner=` and so gets a
chain of its own that nobody else is handed."""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sclora_tools import calibrate, init, merge, train

Settings = dict[str, object]


@dataclass(frozen=True)
class TinyChain:
    """The directories of one chain; a stage that was not asked for is None."""

    model: Path
    calib: Path
    run: Path | None = None
    trained: Path | None = None
    merged: Path | None = None  # a merge output: merged/, lora/, manifest.json


def fresh_copy(artefact: Path, tmp_path: Path, name: str | None = None) -> Path:
    """A private copy of a cached artefact under `tmp_path`, for a test that changes it."""
    return Path(shutil.copytree(artefact, tmp_path / (name or artefact.name)))


def tree_digest(directory: Path) -> dict[str, str]:
    return {p.relative_to(directory).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def key_of(settings: Settings | None) -> tuple:
    return tuple(sorted((settings or {}).items()))


class ChainFactory:
    """`factory(dtype, calibrate={...}, init={...}, train={...}, merge={...}, owner=None) -> TinyChain`.

    Each stage runs its `sclora_tools` function with the given keyword settings (and progress off):
    calibrate on the tiny model of `dtype` with the pos / neg data files, train on the pos file, merge
    of the trained adapter when `train` is given, else of the init run.
    """

    def __init__(self, model_dir: Callable[[str], Path], data_files: dict[str, Path], mktemp: Callable[[str], Path]):
        self.model_dir = model_dir
        self.data_files = data_files
        self.mktemp = mktemp
        self.built: dict[tuple, Path] = {}
        self.digests: dict[Path, dict[str, str]] = {}

    def __call__(self, dtype: str = "fp32", *, calibrate: Settings, init: Settings | None = None, train: Settings | None = None,
                 merge: Settings | None = None, owner: str | None = None) -> TinyChain:
        model = self.model_dir(dtype)
        key = (owner, dtype, key_of(calibrate))
        chain = TinyChain(model=model, calib=self.stage(key, "calib", lambda out: self.build_calib(model, out, calibrate)))
        if init is None:
            return chain
        key = (*key, "init", key_of(init))
        run = self.stage(key, "run", lambda out: self.build_run(chain.calib, out, init))
        trained = None
        if train is not None:
            key = (*key, "train", key_of(train))
            trained = self.stage(key, "trained", lambda out: self.build_trained(run, out, train))
        merged = None
        if merge is not None:
            key = (*key, "merge", key_of(merge))
            merged = self.stage(key, "merged", lambda out: self.build_merged(trained or run, out, merge))
        return TinyChain(model=model, calib=chain.calib, run=run, trained=trained, merged=merged)

    def stage(self, key: tuple, name: str, build: Callable[[Path], None]) -> Path:
        if key not in self.built:
            output = self.mktemp(f"chain-{name}") / name
            build(output)
            self.built[key] = output
            if key[0] is None:
                self.digests[output] = tree_digest(output)
        return self.built[key]

    def build_calib(self, model: Path, output: Path, settings: Settings) -> None:
        calibrate(str(model), str(self.data_files["pos"]), str(self.data_files["neg"]), output, progress=False, **settings)

    def build_run(self, calib: Path, output: Path, settings: Settings) -> None:
        init(calib, output, progress=False, **settings)

    def build_trained(self, run: Path, output: Path, settings: Settings) -> None:
        train(run, output, data_argument=str(self.data_files["pos"]), progress=False, **settings)

    def build_merged(self, source: Path, output: Path, settings: Settings) -> None:
        merge(source, output, progress=False, **settings)

    def changed_artefacts(self) -> list[str]:
        """Shared artefacts whose files differ from what the factory built (a test wrote into one)."""
        return [str(directory) for directory, digest in self.digests.items() if tree_digest(directory) != digest]
