"""Read checkpoint tensors (and their sha256) ahead of the consumer, on one background thread.

safetensors reads and hashlib both release the GIL, so while a stage computes on one tensor the
next ones are already read and hashed. At most `depth` tensors wait in memory.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import torch

from .checkpoint import CheckpointReader
from .hashing import sha256_tensor


def read_and_hash(reader: CheckpointReader, name: str) -> tuple[str, torch.Tensor, str]:
    tensor = reader.read(name)
    return name, tensor, sha256_tensor(tensor)


def prefetched(reader: CheckpointReader, names: list[str] | None = None, depth: int = 2) -> Iterator[tuple[str, torch.Tensor, str]]:
    """(name, tensor, sha256) for every name in order, read `depth` tensors ahead."""
    names = list(reader.names if names is None else names)
    window: deque[Future] = deque()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="sclora-read") as pool:
        try:
            for name in names:
                window.append(pool.submit(read_and_hash, reader, name))
                if len(window) > depth:
                    yield window.popleft().result()
            while window:
                yield window.popleft().result()
        finally:
            for future in window:
                future.cancel()
