"""The processes of a training run: one, or several started by `torchrun --nproc_per_node N` or
`accelerate launch` (both set WORLD_SIZE, RANK and LOCAL_RANK). Data parallelism is the Trainer's
own (accelerate's DistributedDataParallel); this module only starts the process group the way the
Trainer would, a little earlier, so the ranks can agree before training: rank 0 checks the inputs
and prepares the output first, and is the only one to write our files afterwards.

A rank that fails exits with its error; the launcher then stops the others (torchrun does so as
soon as one worker exits non-zero), so nobody waits forever at a barrier; a rank whose barrier
breaks because a peer is gone (gloo notices at once) says so in one sentence. A group this module
starts lives until the process exits (a script may train several times), then is torn down.
"""

from __future__ import annotations

import atexit
import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

from .. import launcher, ui
from ..errors import ScloraError


class PeerStoppedError(ScloraError):
    """Another rank of a distributed run failed, and this one cannot go on without it."""


@dataclass(frozen=True)
class Processes:
    """This process's place in the run."""

    rank: int = 0
    world_size: int = 1
    on_cpu: bool = True

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wait(self) -> None:
        """Every rank reaches this point before any goes on (nothing to do in one process)."""
        if self.world_size <= 1:
            return
        try:
            dist.barrier()
        except RuntimeError as exc:  # gloo: "Connection closed by peer"; DistError is one too
            raise PeerStoppedError(f"rank {self.rank} of {self.world_size}: another rank of this run stopped (its error is "
                                   "printed above); fix that error and re-run.") from exc

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (checks, output preparation, cache fills), then the others.
        When rank 0 fails inside, it never reaches the barrier: it exits and the launcher stops the rest."""
        if not self.is_main:
            self.wait()
        yield
        if self.is_main:
            self.wait()

    @property
    def ddp_backend(self) -> str | None:
        """gloo for several CPU processes (accelerate would pick MPI when torch has it); else the
        Trainer's own choice (NCCL on GPUs, none for one process)."""
        return "gloo" if self.on_cpu and self.world_size > 1 else None


def start() -> Processes:
    """One process, or this rank of a launcher's run with the process group ready."""
    on_cpu = not torch.cuda.is_available()
    world_size = launcher.from_environment().world_size
    if world_size <= 1:
        return Processes(on_cpu=on_cpu)
    from accelerate import PartialState

    starts_group = not dist.is_initialized()
    wanted = Processes(world_size=world_size, on_cpu=on_cpu)
    state = PartialState(cpu=on_cpu, backend=wanted.ddp_backend)  # what TrainingArguments sets up, and reuses
    if starts_group:
        atexit.register(destroy_group)
    if state.process_index != 0:
        ui.console.quiet = True  # rank 0 alone shows progress, warnings and the summary (errors still print)
    return Processes(state.process_index, state.num_processes, on_cpu)


def destroy_group() -> None:
    """At exit: NCCL warns about a process group that was never destroyed."""
    if dist.is_initialized():
        dist.destroy_process_group()
