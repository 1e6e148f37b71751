"""Where sclora keeps what it caches across runs: materialised models and remembered file hashes."""

from __future__ import annotations

import os
from pathlib import Path


def default_cache_root() -> Path:
    """`$SCLORA_CACHE`, else `~/.cache/sclora`; materialised models live under its `models/`."""
    env = os.environ.get("SCLORA_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "sclora"
