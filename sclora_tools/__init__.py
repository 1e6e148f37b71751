"""sclora-tools: SC-LoRA calibrate -> init -> train -> merge -> push.

Every stage runs from Python with the same behaviour as the CLI:

    from sclora_tools import calibrate, init
    calibrate("path/to/model", pos="samsum", neg="safety", output_dir="calib/")
    init("calib/", output_dir="run/", beta=0.9, rank=64)
"""

import importlib

__version__ = "0.1.0"

__all__ = ["__version__", "calibrate", "evaluate", "init", "merge", "push", "train"]
STAGES = {"calibrate", "evaluate", "init", "merge", "push", "train"}


def __getattr__(name: str):
    """Import a stage on first use: `sclora init` need not load what train or push import
    (transformers' model code, peft), which costs seconds per process."""
    if name in STAGES:
        return getattr(importlib.import_module(f".stages.{name}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
