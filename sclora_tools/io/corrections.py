"""exact/corrections.safetensors: the exact-rebuild corrections, four tensors per target module."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from ..core.exact import Correction

FILE = "exact/corrections.safetensors"


def write_corrections(path: Path, corrections: dict[str, Correction]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name, c in corrections.items():
        tensors[f"{name}.steps"] = torch.frombuffer(bytearray(c.steps), dtype=torch.uint8) if c.steps else torch.zeros(0, dtype=torch.uint8)
        tensors[f"{name}.escapes"] = c.escapes
        tensors[f"{name}.patch_indices"] = c.patch_indices
        tensors[f"{name}.patch_values"] = c.patch_values
    save_file(tensors, str(path), metadata={"format": "pt"})


def read_correction(tensors, name: str) -> Correction:
    """One module's correction from an open safetensors handle (or anything with get_tensor)."""
    return Correction(
        steps=tensors.get_tensor(f"{name}.steps").numpy().tobytes(),
        escapes=tensors.get_tensor(f"{name}.escapes"),
        patch_indices=tensors.get_tensor(f"{name}.patch_indices"),
        patch_values=tensors.get_tensor(f"{name}.patch_values"),
    )
