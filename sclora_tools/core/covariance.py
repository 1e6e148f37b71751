"""Streaming second-moment accumulation: sum of x x^T over real tokens, no files, no model."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

NORMALIZATIONS = ("token", "sample")


@dataclass
class SecondMoment:
    """Running sum of x x^T for one activation site (a layer input or output).

    Each batch product is formed in float32 (fast GEMM) and added to an accumulator of
    `dtype` (float64 by default), so rounding does not drift with the number of batches.
    """

    dim: int
    dtype: torch.dtype = torch.float64
    device: torch.device | str = "cpu"
    total: torch.Tensor = field(init=False)
    tokens: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.total = torch.zeros(self.dim, self.dim, dtype=self.dtype, device=self.device)

    def add(self, rows: torch.Tensor) -> None:
        """Add the outer products of `rows` (n x dim), one row per real token."""
        if rows.shape[-1] != self.dim:
            raise ValueError(f"expected rows of width {self.dim}, got {tuple(rows.shape)}")
        rows32 = rows.reshape(-1, self.dim).to(device=self.total.device, dtype=torch.float32)
        self.total += (rows32.T @ rows32).to(self.dtype)
        self.tokens += rows32.shape[0]


def normalize(total: torch.Tensor, tokens: int, samples: int, mode: str) -> torch.Tensor:
    """Turn a sum of outer products into a covariance.

    "token" divides by the number of real tokens (E over tokens); "sample" divides by the number
    of samples, as the paper does with every sample clipped to one length.
    """
    if mode not in NORMALIZATIONS:
        raise ValueError(f"normalisation must be one of {NORMALIZATIONS}, got {mode!r}")
    count = tokens if mode == "token" else samples
    if count <= 0:
        raise ValueError("cannot normalise a covariance collected from zero tokens")
    return total / count
