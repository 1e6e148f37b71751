"""Tests of the example testbeds. Their scripts live in examples/, outside the package, and import
each other as top-level modules (testbed_common, align, split, ...), as they do when run: put
examples/ on the path before any test module here imports them."""

import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
if str(EXAMPLES) not in sys.path:
    sys.path.insert(0, str(EXAMPLES))
