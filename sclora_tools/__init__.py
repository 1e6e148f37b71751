"""sclora-tools: SC-LoRA calibrate -> init -> train -> merge -> push.

Every stage runs from Python with the same behaviour as the CLI:

    from sclora_tools import calibrate, init
    calibrate("path/to/model", pos="samsum", neg="safety", output_dir="calib/")
    init("calib/", output_dir="run/", beta=0.9, rank=64)
"""

__version__ = "0.1.0"

from .stages.calibrate import calibrate  # noqa: E402
from .stages.evaluate import evaluate  # noqa: E402
from .stages.init import init  # noqa: E402
from .stages.merge import merge  # noqa: E402
from .stages.push import push  # noqa: E402
from .stages.train import train  # noqa: E402

__all__ = ["__version__", "calibrate", "evaluate", "init", "merge", "push", "train"]
