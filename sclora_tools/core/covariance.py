"""Streaming second-moment accumulation: sum of x x^T over real tokens, no files, no model."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

NORMALIZATIONS = ("token", "sample")
FLUSH_TOKENS = 16384


@dataclass
class SecondMoment:
    """Running sum of x x^T for one activation site (a layer input or output).

    Batch products are formed in float32 (fast GEMM) straight into a float32 `pending` sum
    (addmm, no temporary), which is added to the `dtype` accumulator (float64 by default) every
    `flush_tokens` tokens, so rounding does not drift with the number of batches and the costly
    mixed-precision add runs once per many batches instead of once per batch.
    """

    dim: int
    dtype: torch.dtype = torch.float64
    device: torch.device | str = "cpu"
    flush_tokens: int = FLUSH_TOKENS
    accumulator: torch.Tensor = field(init=False, repr=False)
    tokens: int = field(init=False, default=0)
    pending: torch.Tensor | None = field(init=False, default=None)
    pending_tokens: int = field(init=False, default=0)

    def __post_init__(self) -> None:
        self.accumulator = torch.zeros(self.dim, self.dim, dtype=self.dtype, device=self.device)
        if self.dtype != torch.float32:
            self.pending = torch.zeros(self.dim, self.dim, dtype=torch.float32, device=self.device)

    def add(self, rows: torch.Tensor) -> None:
        """Add the outer products of `rows` (n x dim), one row per real token."""
        if rows.shape[-1] != self.dim:
            raise ValueError(f"expected rows of width {self.dim}, got {tuple(rows.shape)}")
        rows32 = rows.reshape(-1, self.dim).to(device=self.accumulator.device, dtype=torch.float32)
        if self.dtype == torch.float32:
            self.accumulator.addmm_(rows32.T, rows32)
        else:
            self.pending.addmm_(rows32.T, rows32)
            self.pending_tokens += rows32.shape[0]
            if self.pending_tokens >= self.flush_tokens:
                self.flush()
        self.tokens += rows32.shape[0]

    def flush(self) -> None:
        """Move the float32 pending sum into the accumulator."""
        if self.pending is not None and self.pending_tokens:
            self.accumulator.add_(self.pending)
            self.pending.zero_()
        self.pending_tokens = 0

    @property
    def total(self) -> torch.Tensor:
        """The sum of x x^T over every row added so far, in `dtype` (flushes the pending sum)."""
        self.flush()
        return self.accumulator

    def restore(self, total: torch.Tensor, tokens: int) -> None:
        """Continue from a saved running sum (resume)."""
        self.flush()
        self.accumulator.copy_(total.to(self.accumulator.dtype))
        self.tokens = tokens


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
