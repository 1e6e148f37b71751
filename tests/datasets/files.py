"""Reading the bundled datasets in sclora_tools/datasets/ as plain rows (no package side effects)."""

from __future__ import annotations

import json
import re
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parents[2] / "sclora_tools" / "datasets"


def load(name: str) -> list[dict]:
    path = DATA_DIR / name
    rows = []
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            assert line.strip(), f"{name}:{lineno} is blank"
            rows.append(json.loads(line))
    return rows


def norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().casefold()
