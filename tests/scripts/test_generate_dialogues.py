"""scripts/generate_dialogues.py, the one-off generator of the bundled dialogue -> summary data: it is
deterministic, and re-running it reproduces the shipped jsonl byte for byte."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.datasets.files import DATA_DIR, load

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "generate_dialogues.py"


def load_generator():
    """Import generate_dialogues.py straight from its file."""
    spec = importlib.util.spec_from_file_location("_bundled_generate_dialogues", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def gen():
    return load_generator()


def test_rerunning_the_script_reproduces_the_shipped_files_byte_for_byte(tmp_path):
    result = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["dialogsum_heldout.jsonl", "dialogsum_train.jsonl"]
    for name in written:
        assert (tmp_path / "out" / name).read_bytes() == (DATA_DIR / name).read_bytes(), name


def test_the_script_writes_into_the_package_datasets_folder_by_default(gen):
    assert gen.PACKAGE_DATASETS == DATA_DIR


def test_dialogsum_counts_and_schema(gen):
    for name, n in (("dialogsum_train.jsonl", gen.N_TRAIN), ("dialogsum_heldout.jsonl", gen.N_HELDOUT)):
        rows = load(name)
        assert len(rows) == n == (1000 if "train" in name else 200)
        for i, row in enumerate(rows):
            assert set(row) == {"dialogue", "summary"}, (name, i)
            assert row["dialogue"].strip() and row["summary"].strip(), (name, i)
            lines = row["dialogue"].split("\n")
            assert gen.MIN_TURNS <= len(lines) <= gen.MAX_TURNS, (name, i, len(lines))
            speakers = set()
            for line in lines:
                m = re.match(r"^([A-Z][A-Za-z]+): (\S.*)$", line)
                assert m, (name, i, line)
                speakers.add(m.group(1))
            assert 2 <= len(speakers) <= 4, (name, i, speakers)
            sentences = re.split(r"(?<=[.!?])\s+(?=[A-Z])", row["summary"])
            assert 1 <= len(sentences) <= 3, (name, i, row["summary"])
            assert "{" not in row["dialogue"] + row["summary"], (name, i)


def test_generator_has_many_scenarios(gen):
    assert len(gen.SCENARIOS) >= 15


def test_generator_is_deterministic(gen):
    a = gen.generate(25, seed=7)
    b = gen.generate(25, seed=7)
    assert a == b
    assert gen.generate(25, seed=8) != a


def test_generator_reproduces_shipped_files(gen, tmp_path):
    train, heldout = gen.build_all()
    train2, heldout2 = gen.build_all()
    assert (train, heldout) == (train2, heldout2)
    assert gen.dumps_rows(train) == (DATA_DIR / gen.TRAIN_FILE).read_text(encoding="utf-8")
    assert gen.dumps_rows(heldout) == (DATA_DIR / gen.HELDOUT_FILE).read_text(encoding="utf-8")
    p_train, p_held = gen.write_all(tmp_path)
    assert p_train.read_bytes() == (DATA_DIR / gen.TRAIN_FILE).read_bytes()
    assert p_held.read_bytes() == (DATA_DIR / gen.HELDOUT_FILE).read_bytes()


def test_dialogsum_heldout_disjoint_from_train(gen):
    assert gen.TRAIN_SEED != gen.HELDOUT_SEED
    train = [r["dialogue"] for r in load("dialogsum_train.jsonl")]
    held = [r["dialogue"] for r in load("dialogsum_heldout.jsonl")]
    assert len(set(train)) == len(train)
    assert len(set(held)) == len(held)
    assert not set(train) & set(held)
    assert len({r["summary"] for r in load("dialogsum_train.jsonl")}) >= 950
