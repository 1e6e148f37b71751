"""What a stage run in a fresh process imports: the libraries that cost seconds to import."""

from __future__ import annotations

import ast
import os
import subprocess
import sys

HEAVY = ("peft", "transformers", "accelerate", "datasets")


def heavy_imports_of(statement: str) -> list[str]:
    """Run `statement` (after `import sys`) in a fresh Python process, offline and quiet; the HEAVY
    libraries it left imported."""
    code = f"import sys\n{statement}\nprint(sorted(m for m in {HEAVY!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1", "SCLORA_QUIET": "1"})
    assert done.returncode == 0, done.stderr
    return ast.literal_eval(done.stdout.strip().splitlines()[-1])
