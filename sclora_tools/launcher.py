"""What a launcher (torchrun, `accelerate launch`) tells this process through WORLD_SIZE, RANK
and LOCAL_RANK, read in one place."""

from __future__ import annotations

import os
from dataclasses import dataclass

# Imported before any process group exists, on purpose: torch.distributed.nn.functional binds
# `group.WORLD` as a default argument when first imported, and transformers imports it while
# loading a model. Imported after the group exists, it holds the group forever:
# destroy_process_group then leaves gloo's threads running, and the interpreter's teardown
# sometimes aborts on them (SIGABRT, "terminate called without an active exception").
# Every stage imports this module, so `import sclora_tools` is early enough.
import torch.distributed.nn.functional  # noqa: F401

from .errors import UsageError


@dataclass(frozen=True)
class Launch:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_helper(self) -> bool:
        """A rank other than 0: it computes its share, rank 0 writes."""
        return self.distributed and self.rank != 0


def from_environment() -> Launch:
    """This process's place in a launcher's run (rank 0 of 1 when there is no launcher)."""
    try:
        launch = Launch(int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("LOCAL_RANK", "0")))
    except ValueError as exc:
        raise UsageError(f"the launcher variables RANK, WORLD_SIZE and LOCAL_RANK must be integers ({exc}); "
                         "start the run with torchrun or accelerate launch.") from None
    if launch.world_size < 1 or not 0 <= launch.rank < launch.world_size:
        raise UsageError(f"RANK={launch.rank} and WORLD_SIZE={launch.world_size} do not describe a run; "
                         "start it with torchrun or accelerate launch.")
    return launch


def is_helper_rank() -> bool:
    """Not global rank 0 of several; False when the variables make no sense (the stage that reads
    them says so)."""
    try:
        return from_environment().is_helper
    except UsageError:
        return False

