"""Write-then-rename, so an interrupted or failed stage never leaves an artefact that looks complete."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

from ..errors import InputError, storage_error

MANIFEST = "manifest.json"


@contextlib.contextmanager
def staged_directory(final: Path, kind: str) -> Iterator[Path]:
    """Yield an empty temporary sibling of `final`; on success it replaces `final`.

    Re-running a stage over its own earlier output (same artefact kind) replaces it; any other
    non-empty directory, another stage's artefact included, is never touched.
    """
    refuse_foreign_directory(Path(final), kind)
    with staged_output(final) as staging:
        yield staging


@contextlib.contextmanager
def staged_output(final: Path, finished: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """Yield an empty temporary sibling of `final`; when the block succeeds it replaces `final`.

    Nothing checks what `final` holds: the caller has decided that it may be replaced. In a
    directory that several processes fill (a shared cache), `finished(final)` says whether another
    one completed `final` meanwhile; its copy then stays and this one is dropped.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield staging
        if finished is None or not finished(final):
            publish(staging, final, finished)
    except Exception as exc:
        full = storage_error(exc)
        if full is None:
            raise
        raise full from exc
    finally:
        shutil.rmtree(staging, ignore_errors=True)  # already gone when it was published


def remove_stale_staging(final: Path) -> None:
    """Remove the staging (`.NAME.tmp-*`) and retired copies (`.NAME.old-*`) that a killed writer
    of `final` left beside it. Only the holder of final's lock (io/locks.py) may call this."""
    final = Path(final)
    for kind in ("tmp", "old"):
        for leftover in glob.glob(os.path.join(glob.escape(str(final.parent)), f".{glob.escape(final.name)}.{kind}-*")):
            if os.path.isdir(leftover) and not os.path.islink(leftover):
                shutil.rmtree(leftover, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    os.unlink(leftover)


def publish(staging: Path, final: Path, finished: Callable[[Path], bool] | None) -> None:
    try:
        replace_directory(staging, final)
    except OSError:
        if finished is None or not finished(final):
            raise


def refuse_foreign_directory(final: Path, kind: str | None = None) -> None:
    """Refuse a file, or a non-empty directory that is not an earlier artefact of `kind`."""
    if final.exists() and not final.is_dir():
        raise InputError(f"Output path {final} is a file; choose a directory path.")
    if not final.is_dir() or not any(final.iterdir()):
        return
    manifest = final / MANIFEST
    if not manifest.is_file():
        raise InputError(
            f"Output directory {final} exists and is not an sclora artefact; choose an empty or new directory."
        )
    existing = existing_kind(manifest)
    if kind is not None and existing != kind:
        raise InputError(f"Output directory {final} holds a {existing or 'unknown'} artefact; choose another directory for the {kind} output.")


def existing_kind(manifest: Path) -> str | None:
    try:
        return json.loads(manifest.read_text(encoding="utf-8")).get("kind")
    except (json.JSONDecodeError, OSError, AttributeError):
        return None


def replace_directory(staging: Path, final: Path) -> None:
    if not final.exists():
        os.replace(staging, final)
        return
    retired = Path(tempfile.mkdtemp(prefix=f".{final.name}.old-", dir=final.parent))
    os.replace(final, retired / final.name)
    os.replace(staging, final)
    shutil.rmtree(retired, ignore_errors=True)


def write_json(path: Path, data: object) -> None:
    """Write JSON to a temporary name, then rename over `path`."""
    write_text(path, json.dumps(data, indent=2, sort_keys=False, ensure_ascii=False) + "\n")


def write_text(path: Path, text: str) -> None:
    """Write text to a temporary name, then rename over `path`."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
