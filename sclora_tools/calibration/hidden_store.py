"""The calibration batches' hidden states between two decoder blocks.

Batches stay in memory (on the compute device) up to a byte budget; the rest go to files in a
temporary directory and are read back one batch at a time, so the process holds about one
batch of them however large the calibration set is.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import torch


class HiddenStore:
    """`put(index, tensor)` and `get(index)`; a batch keeps its place (memory or disk) once chosen."""

    def __init__(self, budget_bytes: int, spill_parent: Path, device: torch.device) -> None:
        self.budget, self.used, self.device = budget_bytes, 0, device
        self.spill_parent = Path(spill_parent)
        self.spill_dir: Path | None = None
        self.in_memory: dict[int, torch.Tensor] = {}
        self.on_disk: dict[int, tuple[torch.Size, torch.dtype]] = {}

    def put(self, index: int, tensor: torch.Tensor) -> None:
        size = tensor.numel() * tensor.element_size()
        if index in self.in_memory or (index not in self.on_disk and self.used + size <= self.budget):
            self.used += size if index not in self.in_memory else 0
            self.in_memory[index] = tensor.to(self.device)
            return
        tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tofile(self._path(index))
        self.on_disk[index] = (tensor.shape, tensor.dtype)

    def get(self, index: int) -> torch.Tensor:
        if index in self.in_memory:
            return self.in_memory[index]
        shape, dtype = self.on_disk[index]
        size = shape.numel() * dtype.itemsize
        raw = torch.from_file(str(self._path(index)), shared=False, size=size, dtype=torch.uint8)
        return raw.view(dtype).reshape(shape).to(self.device)

    @property
    def spilled(self) -> int:
        return len(self.on_disk)

    def _path(self, index: int) -> Path:
        if self.spill_dir is None:
            self.spill_dir = Path(tempfile.mkdtemp(prefix=".sclora-hidden-", dir=self.spill_parent))
        return self.spill_dir / f"batch-{index:06d}.bin"

    def close(self) -> None:
        self.in_memory.clear()
        if self.spill_dir is not None:
            shutil.rmtree(self.spill_dir, ignore_errors=True)
