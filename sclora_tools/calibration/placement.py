"""Which engine runs a calibration: the whole model in memory, accelerate's device map, or one
decoder block at a time (sequential) when the model does not fit the device."""

from __future__ import annotations

from dataclasses import dataclass

import psutil
import torch

from ..errors import UsageError
from ..io.checkpoint import CheckpointReader

SEQUENTIAL_CHOICES = ("auto", "on", "off")
DEVICE_MAPS = ("auto",)
HEADROOM = 0.85  # of the available memory, for activations, allocator slack and the rest of the process


@dataclass(frozen=True)
class Placement:
    engine: str  # "in-memory", "device-map" or "sequential"
    requested: str
    model_bytes: int
    available_bytes: int

    def record(self) -> dict:
        return {"engine": self.engine, "sequential": self.requested, "model_bytes": self.model_bytes, "available_bytes": self.available_bytes}


def check_choice(sequential: str, device_map: str | None) -> None:
    if sequential not in SEQUENTIAL_CHOICES:
        raise UsageError(f"--sequential must be auto, on or off, not {sequential!r}.")
    if device_map is not None and device_map not in DEVICE_MAPS:
        raise UsageError(f"--device-map supports only 'auto' (accelerate's placement), not {device_map!r}.")
    if device_map is not None and sequential == "on":
        raise UsageError("--device-map auto and --sequential on are two ways to fit a large model; choose one.")


def choose(sequential: str, device_map: str | None, reader: CheckpointReader, compute_dtype: torch.dtype, device: torch.device) -> Placement:
    """`on`/`off` as asked; `auto`: sequential when the model plus its accumulators would not fit."""
    model_bytes = model_size(reader, compute_dtype)
    available = available_memory(device)
    if device_map is not None:
        return Placement("device-map", sequential, model_bytes, available)
    fits = model_bytes + accumulator_bound(reader) <= HEADROOM * available
    sequential_on = sequential == "on" or (sequential == "auto" and not fits)
    return Placement("sequential" if sequential_on else "in-memory", sequential, model_bytes, available)


def model_size(reader: CheckpointReader, compute_dtype: torch.dtype) -> int:
    """Bytes of the checkpoint's floating-point tensors in the compute dtype (others as stored)."""
    total = 0
    for name in reader.names:
        stored = reader.dtype_of(name)
        itemsize = (compute_dtype if stored.is_floating_point else stored).itemsize
        total += itemsize * int(torch.Size(reader.shape_of(name)).numel())
    return total


def accumulator_bound(reader: CheckpointReader) -> int:
    """An upper bound on one dataset's float64 + float32 accumulators: min(d_out, d_in)^2 per matrix."""
    bound = 0
    for name in reader.names:
        shape = reader.shape_of(name)
        if len(shape) == 2 and name.endswith(".weight"):
            bound += min(shape) ** 2 * 12
    return bound


def available_memory(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    return int(psutil.virtual_memory().available)
