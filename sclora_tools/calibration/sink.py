"""Where finished running sums go: summed over ranks, normalised, checked, and written to the
covariance files (rank 0 only), one site at a time, so accumulators can be freed as they go."""

from __future__ import annotations

from pathlib import Path

import torch

from ..collect import Site
from ..core.covariance import SecondMoment, normalize
from ..core.finite import all_finite
from ..errors import NumericalError
from ..io.covariances import CovarianceWriter, covariance_path
from ..io.manifest_types import Role
from .distributed import Ranks


class CovarianceSink:
    """`finish(role, moments)` for any subset of sites, in the same order on every rank; `close()`
    once every site of every role was finished."""

    def __init__(self, directory: Path | None, sites: list[Site], form: str, ranks: Ranks, counts: dict[Role, tuple[int, int]], normalization: str):
        self.ranks, self.counts, self.normalization = ranks, counts, normalization
        dims = {site.key: site.dim for site in sites}
        self.writers = {role: CovarianceWriter(covariance_path(directory, role), dims, form) for role in counts} if ranks.is_writer else {}

    def __enter__(self) -> CovarianceSink:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        if exc_type is not None:
            self.abandon()

    def finish(self, role: Role, moments: dict[str, SecondMoment]) -> None:
        """One site at a time: its float64 sum exists only until it is written. Below FLUSH_TOKENS
        tokens per dataset the float64 sums are only made here, and taking them all first held
        every one at once (0.3 GB on SmolLM2, which stayed in the process until it ended)."""
        samples, tokens = self.counts[role]
        for key, moment in moments.items():
            with self.ranks.phase():
                total = moment.take_total()
            self.ranks.sum_to_writer(total)
            with self.ranks.phase():  # a NaN or a disk error on the writer reaches every rank as one error
                if self.ranks.is_writer:
                    self.writers[role].write(key, finished(total, tokens, samples, self.normalization, key))
            del total

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()

    def abandon(self) -> None:
        for writer in self.writers.values():
            writer.abandon()


def finished(total: torch.Tensor, tokens: int, samples: int, normalization: str, key: str) -> torch.Tensor:
    covariance = normalize(total, tokens, samples, normalization)
    if not all_finite(covariance):
        raise NumericalError(f"the covariance at {key} holds NaN or Inf; run calibration with --dtype float32.")
    return covariance.cpu()
