"""The calibration's covariance files (pos.safetensors, neg.safetensors): the one place that
writes and reads them, so every reader gets float64 symmetric matrices whatever the storage."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .manifest_types import Role


def covariance_path(calibration_dir: Path, role: Role) -> Path:
    """pos.safetensors for D+, neg.safetensors for D-."""
    return Path(calibration_dir) / f"{role.short}.safetensors"


def write_covariances(calibration_dir: Path, role: Role, covariances: dict[str, torch.Tensor]) -> None:
    """Store one dataset's covariances, keyed by site key (module:side)."""
    tensors = {key: value.detach().cpu().contiguous() for key, value in covariances.items()}
    save_file(tensors, str(covariance_path(calibration_dir, role)), metadata={"format": "pt"})


class CovarianceFile:
    """Lazy access to one dataset's covariances: `get(key)` reads one site as float64."""

    def __init__(self, handle) -> None:
        self._handle = handle

    def keys(self) -> list[str]:
        return list(self._handle.keys())

    def __contains__(self, key: str) -> bool:
        return key in self._handle.keys()

    def get(self, key: str) -> torch.Tensor:
        return self._handle.get_tensor(key).to(torch.float64)


@contextlib.contextmanager
def open_covariances(calibration_dir: Path, role: Role) -> Iterator[CovarianceFile]:
    with safe_open(str(covariance_path(calibration_dir, role)), framework="pt") as handle:
        yield CovarianceFile(handle)
