"""Target layers computed two at a time, results handed back in checkpoint order.

One layer's initialisation is ~30 small steps (an eigh of a few hundred dimensions, a few GEMMs,
the elementwise exact scheme): on a few cores the BLAS and OpenMP threads of a single layer
leave them idle much of the time. Two layers at once, each on half the threads, keep them busy:
`sclora init` of SmolLM2 (rank 16, 2 cores) takes 8.5-9.0 s this way against 11.2-11.4 s one
layer at a time on both threads (1.27-1.32x), for 0.1 GB more peak memory. On a random Llama of
hidden 2048 (float64 layer copies of 92 MB) it gained 1.14x for 0.55 GB more, so past
PARALLEL_LAYER_BYTES (and so at every 7B-70B shape) the layers run one at a time on every thread.

Results depend on the thread count (BLAS sums in another order), so a run's worker count is
fixed up front from the machine and the model's shapes, never from timing.
"""

from __future__ import annotations

import contextlib
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import torch

WORKERS = 2
PARALLEL_LAYER_BYTES = 64 << 20  # float64 bytes of the largest target weight up to which layers pair up


def worker_count(largest_target_entries: int, threads: int | None = None) -> int:
    """2 where there are >= 2 threads and the largest target's float64 copy is small, else 1."""
    threads = torch.get_num_threads() if threads is None else threads
    return WORKERS if threads >= WORKERS and largest_target_entries * 8 <= PARALLEL_LAYER_BYTES else 1


@contextlib.contextmanager
def threads_per_worker(workers: int) -> Iterator[None]:
    """torch's intra-op threads split between the workers while the block runs, then restored."""
    before = torch.get_num_threads()
    torch.set_num_threads(max(1, before // workers))
    try:
        yield
    finally:
        torch.set_num_threads(before)


class OrderedPool:
    """`submit` jobs and `put` ready values in checkpoint order; `ready()` yields (key, value)
    in that same order as soon as the head is done, and waits for it while more than `workers`
    jobs are unfinished, so at most that many layers (and what waits behind them) are in memory.
    A job's exception is raised by `ready()` when its turn comes."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sclora-layer") if workers > 1 else None
        self.queue: deque[tuple[str, Future | Any]] = deque()
        self.running = self.submitted = 0

    def submit(self, key: str, job: Callable[..., Any], *args) -> None:
        self.submitted += 1
        if self.executor is None:
            self.queue.append((key, job(*args)))
            return
        self.queue.append((key, self.executor.submit(job, *args)))
        self.running += 1

    def put(self, key: str, value: Any) -> None:
        self.queue.append((key, value))

    def ready(self, drain: bool = False) -> Iterator[tuple[str, Any]]:
        while self.queue and (drain or self.running > self.workers or self.head_done()):
            key, item = self.queue.popleft()
            if isinstance(item, Future):
                self.running -= 1
                item = item.result()
            yield key, item

    def head_done(self) -> bool:
        item = self.queue[0][1]
        return not isinstance(item, Future) or item.done()

    def __enter__(self) -> OrderedPool:
        return self

    def __exit__(self, *exc) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)
