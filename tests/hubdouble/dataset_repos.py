"""A small samsum-shaped dataset repo for the Hub test double: parquet shards per split and a card
whose `configs` name them, laid out as the Hub's own parquet uploads are."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq

SAMSUM_REPO = "knkarthick/samsum"  # the registry's `samsum` entry
NAMES = ("Amanda", "Jerry", "Olivia", "Tom", "Lena", "Marco")
THINGS = ("cookies", "the tickets", "a charger", "the keys", "some soup", "the slides", "a bike", "the recipe")
SPLIT_SIZES = {"train": 24, "validation": 6, "test": 6}
CARD = """---
license: cc-by-nc-nd-4.0
configs:
- config_name: default
  data_files:
  - split: train
    path: data/train-*
  - split: validation
    path: data/validation-*
  - split: test
    path: data/test-*
---

# samsum-shaped test data
"""


def samsum_rows(split: str) -> list[dict]:
    """`id`, `dialogue`, `summary` rows like SAMSum's, distinct per split."""
    offset = {"train": 0, "validation": 1000, "test": 2000}[split]
    rows = []
    for i in range(SPLIT_SIZES[split]):
        a, b, thing = NAMES[i % len(NAMES)], NAMES[(i + 1 + i // len(NAMES)) % len(NAMES)], THINGS[(i * 3) % len(THINGS)]
        dialogue = f"{a}: Did you bring {thing}?\r\n{b}: Not yet, tomorrow ({split} {i}).\r\n{a}: Fine, thanks!"
        rows.append({"id": str(13818513 + offset + i), "dialogue": dialogue, "summary": f"{b} will bring {a} {thing} tomorrow."})
    return rows


def parquet_bytes(rows: list[dict]) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), sink)
    return sink.getvalue()


def samsum_files() -> dict[str, bytes]:
    files = {"README.md": CARD.encode()}
    for split in SPLIT_SIZES:
        files[f"data/{split}-00000-of-00001.parquet"] = parquet_bytes(samsum_rows(split))
    return files


def serve_samsum(server, repo_id: str = SAMSUM_REPO) -> str:
    """Put the dataset on `server` (a FakeHubServer) as `repo_id`; returns the commit of main."""
    server.create_repo(f"datasets/{repo_id}", files=samsum_files())
    return server.head(f"datasets/{repo_id}")
