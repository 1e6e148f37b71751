"""Data-parallel calibration on torch.distributed: one process per device, started by torchrun
or `accelerate launch` (both set WORLD_SIZE, RANK and LOCAL_RANK).

Each rank collects the sums of its own samples; the float64 sums and token counts are summed
onto rank 0, which writes the artefact. Ranks agree at the end of every phase (`phase()`): a
rank that fails tells the others, which stop with one sentence instead of waiting for it in a
collective; a rank that fails outside a phase exits, and the launcher stops the rest.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import torch
import torch.distributed as dist

from .. import launcher, models
from ..errors import ScloraError

T = TypeVar("T")
GROUP_TIMEOUT = datetime.timedelta(minutes=30)
FAILURE_NOTICE_TIMEOUT = datetime.timedelta(seconds=60)


class RankFailedError(ScloraError):
    """Another rank of a distributed run failed; its own message says why."""


@dataclass
class Ranks:
    """This process's place in the run: rank, world size, and the device it computes on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_writer(self) -> bool:
        return self.rank == 0

    @contextlib.contextmanager
    def phase(self) -> Iterator[None]:
        """Every rank leaves a phase together: all succeeded, or all raise."""
        try:
            yield
        except BaseException:
            self.vote(failed=True)
            raise
        self.vote(failed=False)

    def vote(self, failed: bool) -> None:
        if not self.distributed:
            return
        flags = torch.zeros(self.world_size, dtype=torch.int64, device=self.collective_device)
        flags[self.rank] = int(failed)
        work = dist.all_reduce(flags, async_op=True)
        if failed:  # tell the others, but never wait long for ranks that are still computing
            with contextlib.suppress(RuntimeError):
                work.wait(timeout=FAILURE_NOTICE_TIMEOUT)
            return
        work.wait()
        failures = [rank for rank, flag in enumerate(flags.tolist()) if flag]
        if failures:
            raise RankFailedError(f"rank {failures[0]} of {self.world_size} failed (its error is printed above); "
                                  "nothing was written, fix that error and re-run.")

    def writer_first(self, work: Callable[[], T]) -> T:
        """Run `work` on rank 0 first (e.g. a download or a cache fill), then on the others."""
        if self.is_writer:
            with self.phase():
                result = work()
            return result
        with self.phase():
            pass
        return work()

    def sum_to_writer(self, tensor: torch.Tensor) -> None:
        """In place: on rank 0 the sum over ranks; elsewhere the tensor is left undefined."""
        if self.distributed:
            dist.reduce(tensor, dst=0, op=dist.ReduceOp.SUM)

    def total(self, value: int) -> int:
        """The sum of an integer over ranks, on every rank."""
        if not self.distributed:
            return value
        tensor = torch.tensor([value], dtype=torch.int64, device=self.collective_device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return int(tensor.item())

    @property
    def collective_device(self) -> torch.device:
        return self.device if dist.get_backend() == "nccl" else torch.device("cpu")


def from_environment(device_name: str) -> Ranks:
    """Ranks from the launcher's variables (a single process when there are none)."""
    launch = launcher.from_environment()
    device = models.pick_device(device_name)
    if launch.distributed and device.type == "cuda" and device.index is None:
        device = torch.device("cuda", launch.local_rank)
    return Ranks(launch.rank, launch.world_size, launch.local_rank, device)


@contextlib.contextmanager
def session(device_name: str) -> Iterator[Ranks]:
    """The ranks of this run, with the process group set up (gloo on CPU, NCCL on CUDA) when
    the launcher started several processes and nobody set it up before."""
    ranks = from_environment(device_name)
    started_here = ranks.distributed and not dist.is_initialized()
    if started_here:
        if ranks.device.type == "cuda":
            torch.cuda.set_device(ranks.device)
        dist.init_process_group("nccl" if ranks.device.type == "cuda" else "gloo", timeout=GROUP_TIMEOUT)
    if ranks.distributed and not ranks.is_writer:
        os.environ["SCLORA_QUIET"] = "1"  # one summary and one progress display: rank 0's
    try:
        yield ranks
        if started_here:
            dist.barrier()  # gloo aborts a rank whose group is torn down while a peer still uses it (seen as SIGABRT at exit)
    finally:
        if started_here:
            dist.destroy_process_group()
