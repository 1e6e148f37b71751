"""The knowledge set split in two that never overlap: rows for calibration (D-, what SC-LoRA,
CorDA KPA and LoRA-Null preserve) and rows for the exact-match evaluation.

A row goes to calibration when the sha256 of its normalised question falls in the first
`calibration_share` of the hash range: the split depends on the question alone (not on file
order or a random state), so it is the same on every machine and a row never changes side when
rows are added or reordered."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

CALIBRATION_SHARE = 0.4
BUCKETS = 10_000


def question_key(question: str) -> str:
    return re.sub(r"\s+", " ", question).strip().casefold()


def goes_to_calibration(question: str, share: float = CALIBRATION_SHARE) -> bool:
    digest = hashlib.sha256(question_key(question).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % BUCKETS < share * BUCKETS


def split_rows(rows: list[dict], share: float = CALIBRATION_SHARE) -> tuple[list[dict], list[dict]]:
    """(calibration rows, evaluation rows), each in file order; a question that occurs twice lands
    on one side with both its rows."""
    calibration = [row for row in rows if goes_to_calibration(row["question"], share)]
    evaluation = [row for row in rows if not goes_to_calibration(row["question"], share)]
    return calibration, evaluation


def as_chat_row(row: dict) -> dict:
    """The registry's knowledge template (prompt = question, response = answer), aliases kept for
    the exact match."""
    return {"prompt": row["question"], "response": row["answer"], "aliases": list(row.get("aliases") or [])}


def write_split(rows: list[dict], directory: Path) -> tuple[Path, Path]:
    """knowledge_calibration.jsonl and knowledge_eval.jsonl in `directory` (rewritten identically)."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = directory / "knowledge_calibration.jsonl", directory / "knowledge_eval.jsonl"
    for path, part in zip(paths, split_rows(rows), strict=True):
        path.write_text("".join(json.dumps(as_chat_row(row), ensure_ascii=False) + "\n" for row in part), encoding="utf-8")
    return paths
