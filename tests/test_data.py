"""sclora_tools/data.py: what a dataset argument resolves to, and local files read as rows (the Hub
side is in tests/io/test_hub_datasets.py)."""

from __future__ import annotations

import json
import sys

import pytest

from sclora_tools import data
from sclora_tools.errors import InputError


def test_registry_hub_entries_take_a_split_and_keep_their_templates():
    spec = data.resolve_dataset("samsum:test")
    assert (spec.kind, spec.source, spec.split, spec.offline) == ("hub", "knkarthick/samsum", "test", "dialogsum")
    assert spec.prompt_template == data.resolve_dataset("samsum").prompt_template
    with pytest.raises(InputError, match="not a registry name"):
        data.resolve_dataset("safety:test")  # a bundled entry has its splits as separate names


def test_a_hub_id_takes_a_revision_and_a_split():
    spec = data.resolve_dataset("org/set@v1.2:validation")
    assert (spec.kind, spec.source, spec.revision, spec.split) == ("hub", "org/set", "v1.2", "validation")
    assert data.resolve_dataset("org/set").revision is None and data.resolve_dataset("org/set").split == "train"


def test_a_json_file_may_hold_a_list_an_object_or_json_lines(tmp_path):
    rows = [{"text": "a"}, {"text": "b"}]
    for name, content in (("list.json", json.dumps(rows)), ("object.json", json.dumps({"data": rows})),
                          ("lines.json", "\n".join(json.dumps(row) for row in rows) + "\n")):
        (tmp_path / name).write_text(content, encoding="utf-8")
        assert data.read_local_file(tmp_path / name) == rows
    (tmp_path / "broken.json").write_text('[{"text": "a"', encoding="utf-8")
    with pytest.raises(InputError, match="cannot read .*broken.json as json"):
        data.read_local_file(tmp_path / "broken.json")


def test_parquet_without_pyarrow_is_one_sentence(tmp_path, monkeypatch):
    path = tmp_path / "rows.parquet"
    path.write_bytes(b"PAR1")
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # as on a machine without pyarrow
    with pytest.raises(InputError, match=r"rows.parquet needs pyarrow.*pip install pyarrow"):
        data.read_local_file(path)
