"""Streaming second-moment accumulation: sum of x x^T over real tokens, no files, no model."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

NORMALIZATIONS = ("token", "sample")
FLUSH_TOKENS = 16384
LEAF_WIDTH = {"cpu": 128, "cuda": 1024}  # split blocks twice this wide: small GEMMs are cheap on CPUs, launches cost on GPUs


def leaf_width_for(device: torch.device | str) -> int:
    return LEAF_WIDTH.get(torch.device(device).type, LEAF_WIDTH["cuda"])


def add_upper_gram(accumulator: torch.Tensor, rows: torch.Tensor, leaf_width: int) -> None:
    """accumulator += rows^T rows on and above the diagonal blocks, in place.

    The Gram matrix is symmetric, so its lower off-diagonal blocks are not computed: splitting
    the columns in halves recursively down to `leaf_width` saves up to half the multiply-adds
    (a symmetric rank-k update, built from plain matrix products that run on any device).
    Below the diagonal blocks the accumulator is left untouched; `mirror_upper` completes it.
    """
    width = rows.shape[1]
    if width < 2 * leaf_width:
        accumulator.addmm_(rows.T, rows)
        return
    half = width // 2
    left, right = rows[:, :half], rows[:, half:]
    add_upper_gram(accumulator[:half, :half], left, leaf_width)
    accumulator[:half, half:].addmm_(left.T, right)
    add_upper_gram(accumulator[half:, half:], right, leaf_width)


def mirror_upper(matrix: torch.Tensor) -> None:
    """Make a square matrix symmetric from its upper triangle, in place."""
    matrix.triu_()
    matrix.add_(matrix.triu(1).T)


@dataclass
class SecondMoment:
    """Running sum of x x^T for one activation site (a layer input or output).

    Batch products are formed in float32 (fast GEMM) straight into a float32 `pending` sum
    (addmm, no temporary, upper blocks only: `add_upper_gram`), which is added to the `dtype`
    accumulator (float64 by default) every `flush_tokens` tokens, so rounding does not drift with
    the number of batches and the costly mixed-precision add runs once per many batches instead
    of once per batch. The `dtype` accumulator is allocated at the first flush (until then it
    would only hold zeros: 0 + pending is pending exactly), so a calibration of fewer tokens than
    `flush_tokens` never holds both: 4 bytes per entry instead of 12 during the forward passes.
    Reading `total` completes the lower triangle; `take_total` also lets go of both buffers.
    """

    dim: int
    dtype: torch.dtype = torch.float64
    device: torch.device | str = "cpu"
    flush_tokens: int = FLUSH_TOKENS
    leaf_width: int | None = None  # default: by device (leaf_width_for)
    accumulator: torch.Tensor | None = field(init=False, repr=False, default=None)
    tokens: int = field(init=False, default=0)
    pending: torch.Tensor | None = field(init=False, default=None)
    pending_tokens: int = field(init=False, default=0)
    taken: bool = field(init=False, default=False)

    def __post_init__(self) -> None:
        self.leaf_width = self.leaf_width or leaf_width_for(self.device)
        if self.dtype == torch.float32:
            self.accumulator = self.zeros(torch.float32)
        else:
            self.pending = self.zeros(torch.float32)

    def zeros(self, dtype: torch.dtype) -> torch.Tensor:
        """A zero sum; never an inference tensor (hooks add rows under inference_mode, and the sum
        is mirrored and all-reduced in place outside it)."""
        with torch.inference_mode(False):
            return torch.zeros(self.dim, self.dim, dtype=dtype, device=self.device)

    def add(self, rows: torch.Tensor) -> None:
        """Add the outer products of `rows` (n x dim), one row per real token."""
        if rows.shape[-1] != self.dim:
            raise ValueError(f"expected rows of width {self.dim}, got {tuple(rows.shape)}")
        if self.taken:
            raise RuntimeError("this running sum was taken (take_total); start a new SecondMoment")
        rows32 = rows.reshape(-1, self.dim).to(device=self.device, dtype=torch.float32)
        if self.dtype == torch.float32:
            add_upper_gram(self.accumulator, rows32, self.leaf_width)
        else:
            add_upper_gram(self.pending, rows32, self.leaf_width)
            self.pending_tokens += rows32.shape[0]
            if self.pending_tokens >= self.flush_tokens:
                self.flush()
        self.tokens += rows32.shape[0]

    def flush(self) -> None:
        """Move the float32 pending sum into the accumulator."""
        if self.pending is not None and self.pending_tokens:
            if self.accumulator is None:
                self.accumulator = self.zeros(self.dtype)
                self.accumulator.copy_(self.pending)
            else:
                self.accumulator.add_(self.pending)
            self.pending.zero_()
        self.pending_tokens = 0

    @property
    def total(self) -> torch.Tensor:
        """The sum of x x^T over every row added so far, in `dtype` (flushes the pending sum)."""
        if self.taken:
            raise RuntimeError("this running sum was taken (take_total)")
        self.flush()
        if self.accumulator is None:
            self.accumulator = self.zeros(self.dtype)
        if self.dim >= 2 * self.leaf_width:  # below that, every product was a full one: already symmetric
            mirror_upper(self.accumulator)
        return self.accumulator

    def take_total(self) -> torch.Tensor:
        """`total`, after which this running sum holds no buffer (the caller owns the result)."""
        total = self.total
        self.accumulator, self.pending, self.taken = None, None, True
        return total

    def restore(self, total: torch.Tensor, tokens: int) -> None:
        """Continue from a saved running sum (resume)."""
        self.flush()
        self.accumulator = self.zeros(self.dtype)
        self.accumulator.copy_(total)
        self.tokens, self.taken = tokens, False
        if self.pending is None and self.dtype != torch.float32:
            self.pending = self.zeros(torch.float32)


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
