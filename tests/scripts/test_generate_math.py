"""scripts/generate_math.py, the generator of the bundled word problems: re-running it reproduces
the shipped jsonl byte for byte."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.datasets.files import DATA_DIR

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "generate_math.py"


def test_rerunning_the_script_reproduces_the_shipped_files_byte_for_byte(tmp_path):
    result = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["math_heldout.jsonl", "math_train.jsonl"]
    for name in ("math_heldout.jsonl", "math_train.jsonl"):
        assert (tmp_path / name).read_bytes() == (DATA_DIR / name).read_bytes(), name
