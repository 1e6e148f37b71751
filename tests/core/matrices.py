"""Small seeded float64 matrices for the core maths tests: random, orthonormal, PSD, with a given
spectrum; projectors, eigengaps, and bit-for-bit equality."""

from __future__ import annotations

import torch

from sclora_tools.core import exact, subspace

F64 = torch.float64
DTYPES = (torch.float32, torch.bfloat16, torch.float16)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def randn(*shape, seed: int, scale: float = 1.0) -> torch.Tensor:
    return torch.randn(*shape, generator=gen(seed), dtype=F64) * scale


def orthonormal(rows: int, cols: int, seed: int) -> torch.Tensor:
    q, _ = torch.linalg.qr(randn(rows, cols, seed=seed))
    return q


def psd(dim: int, seed: int, rank: int | None = None, scale: float = 1.0) -> torch.Tensor:
    x = randn(rank or 2 * dim, dim, seed=seed)
    return scale * (x.T @ x) / x.shape[0]


def with_spectrum(values, seed: int) -> torch.Tensor:
    values = torch.as_tensor(values, dtype=F64)
    v = orthonormal(values.numel(), values.numel(), seed)
    return v @ torch.diag(values) @ v.T


def projector(basis: torch.Tensor) -> torch.Tensor:
    return basis @ basis.T


def eigengap(matrix: torch.Tensor, rank: int) -> float:
    """(lambda_r - lambda_{r+1}) / max|lambda|, eigenvalues in descending order."""
    values = torch.linalg.eigvalsh(subspace.symmetrize(matrix)).flip(0)
    return float((values[rank - 1] - values[rank]) / values.abs().max())


def bits_equal(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.dtype == b.dtype and a.shape == b.shape and bool(exact.same_bits(a, b).all())
