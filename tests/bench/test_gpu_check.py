"""bench/gpu_check.sh --cpu-smoke: the GPU check's calibrate -> init -> train -> merge path runs from the
source tree on a tiny model, with datasets, rouge_score, gguf and matplotlib unimportable (the GPU
machine has none of them), so a module-level import of one of them on that path fails here."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
ABSENT = ("datasets", "rouge_score", "gguf", "matplotlib")
SITECUSTOMIZE = f"import sys\nfor name in {ABSENT!r}:\n    sys.modules[name] = None  # `import name` raises ImportError\n"


@pytest.fixture(scope="module")
def without_optional_libraries(tmp_path_factory) -> dict[str, str]:
    """An environment whose Python cannot import the libraries the GPU machine lacks."""
    site = tmp_path_factory.mktemp("absent-libraries")
    (site / "sitecustomize.py").write_text(SITECUSTOMIZE)
    environment = {key: value for key, value in os.environ.items() if key not in ("PYTHONPATH", "SCLORA_EMBEDDED_DIR")}
    return {**environment, "PYTHONPATH": str(site), "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}


def test_the_libraries_are_really_unimportable_there(without_optional_libraries):
    for name in ABSENT:
        probe = subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True, text=True, env=without_optional_libraries)
        assert probe.returncode != 0 and "ModuleNotFoundError" in probe.stderr, name


@pytest.mark.slow
def test_cpu_smoke_runs_every_stage_without_them(without_optional_libraries, tmp_path):
    result = subprocess.run([str(ROOT / "bench" / "gpu_check.sh"), "--cpu-smoke", "--work", str(tmp_path / "work")],
                            capture_output=True, text=True, env=without_optional_libraries, cwd=tmp_path, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    for stage in ("build (random bf16)", "calibrate in-memory", "calibrate sequential", "sequential == in-memory", "init",
                  "init vs its I/O floor", "train", "merge + W0 check"):
        assert any(f"llama-tiny: {stage}" in line and "FAILED" not in line and "skipped" not in line for line in lines), stage
    assert any("llama-tiny: sequential == in-memory" in line and "equal to in-memory: max |diff|" in line for line in lines)
    assert any("W0 check passed" in line for line in lines)
    assert any(re.search(r"init vs its I/O floor .* floor [0-9.]+ s; init [0-9.]+x it, [0-9.]+ s per target layer", line) for line in lines)
    assert any(re.search(r"eigen: mixed vs float64 eigh .* 600 x rank 16: float64 eigh [0-9.]+ s, mixed [0-9.]+ s .*R\(S\) "
                         r"[0-9.e+-]+ relative apart", line) and "FAILED" not in line for line in lines)
    assert any(line.startswith("smollm2: every stage") and "skipped" in line for line in lines)  # no directory given
    assert lines[-1].endswith("all stages passed")
    assert "Traceback" not in result.stderr and "it/s]" not in result.stdout + result.stderr  # no progress bars
    assert (tmp_path / "work" / "llama-tiny-merged" / "merged" / "config.json").is_file()
