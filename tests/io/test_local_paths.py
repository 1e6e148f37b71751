"""sclora_tools/io/local_paths.py: local paths in published text become <local>/NAME; ids and URLs stay."""

from __future__ import annotations

import pytest

from sclora_tools.io.local_paths import hide_in_text


@pytest.mark.parametrize("text, expected", [
    ("/home/alice/data/pos.jsonl", "<local>/pos.jsonl"),
    ("/home/al ice/my data.jsonl", "<local>/my data.jsonl"),
    ("sclora calibrate '/srv/a b/model' org/data -o ~/runs/calib/", "sclora calibrate '<local>/model' org/data -o <local>/calib"),
    ("from_pretrained('/tmp/x/base')  # (/tmp/x/base)", "from_pretrained('<local>/base')  # (<local>/base)"),
    ("--to=/srv/out", "--to=<local>/out"),
    ("knkarthick/samsum", "knkarthick/samsum"),
    ("https://example.org/a/b", "https://example.org/a/b"),
    ("data/mine.jsonl", "data/mine.jsonl"),
])
def test_hide_in_text(text, expected):
    assert hide_in_text(text) == expected
