"""The calibration's covariance files (pos.safetensors, neg.safetensors): the one place that
writes and reads them, so every reader gets float64 symmetric matrices whatever the storage.

A file is written with its whole layout (every key, dimension and storage form) known up front:
the safetensors header goes first and each covariance is encoded and written at its offset when
it is ready, so a model's covariances never have to be in memory together. The storage form is
recorded in the file's metadata; files without it (older artefacts) hold full float64 matrices.
"""

from __future__ import annotations

import contextlib
import json
import math
import struct
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import safe_open

from ..core import covariance_codec as codec
from ..errors import InputError
from .manifest_types import Role

STORAGE_KEY = "sclora_storage"
PART_SEPARATOR = "@"
DTYPE_CODES = {torch.float64: "F64", torch.float32: "F32", torch.int16: "I16", torch.uint8: "U8"}
HEADER_ALIGNMENT = 8


def covariance_path(calibration_dir: Path, role: Role) -> Path:
    """pos.safetensors for D+, neg.safetensors for D-."""
    return Path(calibration_dir) / f"{role.short}.safetensors"


def part_layout(dim: int, form: str) -> list[tuple[str, torch.dtype, tuple[int, ...]]]:
    """(part name, dtype, shape) of every tensor that stores one (dim x dim) covariance."""
    packed, strict = codec.packed_length(dim), codec.packed_length(dim) - dim
    layouts = {
        "float64": [("", torch.float64, (dim, dim))],
        "float64-packed": [("", torch.float64, (packed,))],
        "float32": [("", torch.float32, (packed,))],
        "float24": [("", torch.uint8, (packed, 3))],
        "corr24": [("", torch.uint8, (strict, 3)), ("diag", torch.float64, (dim,))],
        "corr16": [("", torch.int16, (strict,)), ("diag", torch.float64, (dim,))],
    }
    if form not in layouts:
        raise ValueError(f"unknown covariance storage form {form!r}")
    return layouts[form]


def tensor_name(key: str, part: str) -> str:
    return f"{key}{PART_SEPARATOR}{part}" if part else key


class CovarianceWriter:
    """Writes one dataset's covariance file; `write(key, covariance)` in any order, then `close()`."""

    def __init__(self, path: Path, dims: dict[str, int], form: str, metadata: dict[str, str] | None = None) -> None:
        self.path, self.dims, self.form = Path(path), dict(dims), form
        self.entries: dict[str, tuple[torch.dtype, tuple[int, ...], int]] = {}
        header: dict[str, object] = {"__metadata__": {"format": "pt", STORAGE_KEY: form, **(metadata or {})}}
        offset = 0
        for key, dim in self.dims.items():
            for part, dtype, shape in part_layout(dim, form):
                size = math.prod(shape) * torch.empty(0, dtype=dtype).element_size()
                self.entries[tensor_name(key, part)] = (dtype, shape, offset)
                header[tensor_name(key, part)] = {"dtype": DTYPE_CODES[dtype], "shape": list(shape), "data_offsets": [offset, offset + size]}
                offset += size
        encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
        encoded += b" " * (-len(encoded) % HEADER_ALIGNMENT)
        self.data_start = 8 + len(encoded)
        self.pending = set(self.dims)
        self.handle = open(self.path, "wb")  # noqa: SIM115 - closed in close()
        self.handle.write(struct.pack("<Q", len(encoded)) + encoded)
        self.handle.truncate(self.data_start + offset)

    def write(self, key: str, covariance: torch.Tensor) -> None:
        if covariance.shape != (self.dims[key], self.dims[key]):
            raise ValueError(f"covariance {key} has shape {tuple(covariance.shape)}, expected {self.dims[key]}^2")
        for part, tensor in codec.encode(covariance.detach().cpu(), self.form).items():
            dtype, shape, offset = self.entries[tensor_name(key, part)]
            if tensor.dtype != dtype or tuple(tensor.shape) != shape:
                raise ValueError(f"encoded part {tensor_name(key, part)} has the wrong layout")
            self.handle.seek(self.data_start + offset)
            self.handle.write(tensor.contiguous().numpy())
        self.pending.discard(key)

    def close(self) -> None:
        if self.pending:
            raise RuntimeError(f"{len(self.pending)} covariances were never written to {self.path} (e.g. {sorted(self.pending)[0]})")
        self.handle.close()

    def abandon(self) -> None:
        self.handle.close()


class CovarianceFile:
    """Lazy access to one dataset's covariances: `get(key)` reads one site as float64 (d x d)."""

    def __init__(self, handle) -> None:
        self._handle = handle
        metadata = handle.metadata() or {}
        self.form = metadata.get(STORAGE_KEY, "float64")
        if self.form not in codec.FORMATS:
            raise InputError(f"the covariance file stores the unknown form {self.form!r}; upgrade sclora-tools to read it.")
        self._names = set(handle.keys())

    def keys(self) -> list[str]:
        return [name for name in self._handle.keys() if PART_SEPARATOR not in name]

    def __contains__(self, key: str) -> bool:
        return key in self._names

    def get(self, key: str) -> torch.Tensor:
        prefix = key + PART_SEPARATOR
        parts = {"": self._handle.get_tensor(key)}
        parts.update({name[len(prefix):]: self._handle.get_tensor(name) for name in self._names if name.startswith(prefix)})
        return codec.decode(parts, stored_dim(parts, self.form), self.form)


def stored_dim(parts: dict[str, torch.Tensor], form: str) -> int:
    if form == "float64":
        return parts[""].shape[0]
    if "diag" in parts:
        return parts["diag"].shape[0]
    return (math.isqrt(8 * parts[""].shape[0] + 1) - 1) // 2


@contextlib.contextmanager
def open_covariances(calibration_dir: Path, role: Role) -> Iterator[CovarianceFile]:
    with open_covariance_file(covariance_path(calibration_dir, role)) as covariances:
        yield covariances


@contextlib.contextmanager
def open_covariance_file(path: Path) -> Iterator[CovarianceFile]:
    try:
        with safe_open(str(path), framework="pt") as handle:
            yield CovarianceFile(handle)
    finally:
        codec.release_decode_indices()  # up to 1 GB at 70B widths: not kept past the reading stage


def write_covariances(calibration_dir: Path, role: Role, covariances: dict[str, torch.Tensor], form: str = "float64") -> None:
    """Store one dataset's covariances (all in memory already), keyed by site key (module:side)."""
    writer = CovarianceWriter(covariance_path(calibration_dir, role), {k: v.shape[0] for k, v in covariances.items()}, form)
    try:
        for key, covariance in covariances.items():
            writer.write(key, covariance)
    except BaseException:
        writer.abandon()
        raise
    writer.close()
