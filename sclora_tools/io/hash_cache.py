"""sha256 of large files, remembered per file identity.

Every stage checks the model's weight files against the hashes its parent recorded; re-reading
a 7B checkpoint for that costs about half a minute a stage (a second on SmolLM2, 6% of init).
A file's identity here is (device, inode, size, mtime, ctime) in nanoseconds, as git's index
and DVC's state keep it: any write to the file changes its ctime, which no user call can set
back, so a remembered hash is only reused for the same unchanged bytes. As in git's "racily
clean" rule, a file changed less than RACY_SECONDS before it was hashed is not remembered: a
same-size rewrite inside one timestamp tick would keep its identity. The per-tensor sha256 that
init and merge record are always computed from the bytes themselves.

The cache is `$SCLORA_HASH_CACHE` if set, else `file-hashes.json` in sclora's cache directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
from pathlib import Path

from .atomic import write_json
from .cache_root import default_cache_root
from .hashing import sha256_file

FILE_NAME = "file-hashes.json"
ENVIRONMENT = "SCLORA_HASH_CACHE"
RACY_SECONDS = 2.0
OFF = "off"


def cache_file(cache_root: Path | None = None) -> Path | None:
    """`$SCLORA_HASH_CACHE`, else FILE_NAME in `cache_root` (default: sclora's cache directory);
    None when `$SCLORA_HASH_CACHE` is `off`: every file is read in full, every time (what catches
    damage that leaves a file's size and times alone, such as bit rot)."""
    override = os.environ.get(ENVIRONMENT)
    if override == OFF:
        return None
    if override:
        return Path(override).expanduser()
    return Path(cache_root if cache_root is not None else default_cache_root()) / FILE_NAME


def identity(stat: os.stat_result) -> list[int]:
    return [stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns]


def remembered(cache_file: Path) -> dict:
    """The cache's entries; an unreadable or foreign file counts as empty."""
    try:
        entries = json.loads(cache_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return entries if isinstance(entries, dict) else {}


def sha256_files(files: list[Path], cache_file: Path | None) -> dict[Path, str]:
    """sha256 of each file, reusing what `cache_file` remembers for a file of the same identity
    and remembering the rest (entries for files that no longer exist are dropped); with no
    cache file, every file is read."""
    if cache_file is None:
        return {file: sha256_file(file) for file in files}
    entries = remembered(cache_file)
    hashes, changed = {}, False
    for file in files:
        key, current, looked = str(Path(file).resolve()), identity(os.stat(file)), time.time_ns()
        entry = entries.get(key)
        if isinstance(entry, dict) and entry.get("identity") == current and isinstance(entry.get("sha256"), str):
            hashes[file] = entry["sha256"]
            continue
        hashes[file] = sha256_file(file)
        if settled(current, looked) and identity(os.stat(file)) == current:  # unchanged while it was read
            entries[key], changed = {"identity": current, "sha256": hashes[file]}, True
    if changed:
        store(cache_file, {key: entry for key, entry in entries.items() if os.path.exists(key)})
    return hashes


def settled(file_identity: list[int], looked_ns: int) -> bool:
    """Whether, when it was stat'ed, the file had last changed long enough before that a rewrite
    would show in its identity."""
    return looked_ns - max(file_identity[3], file_identity[4]) > RACY_SECONDS * 1e9


def store(cache_file: Path, entries: dict) -> None:
    """Best effort: a cache that cannot be written only costs the next stage a re-hash."""
    with contextlib.suppress(OSError):
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        write_json(cache_file, entries)
