"""Import the example testbeds' scripts (they live outside the package) by file path."""

from __future__ import annotations

import importlib.util
import sys

from tests.examples import EXAMPLES


def load_script(relative: str, name: str):
    """examples/<relative> as a module called `name` (its own folder importable, as when run)."""
    path = EXAMPLES / relative
    if str(path.parent) not in sys.path:
        sys.path.insert(0, str(path.parent))
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
