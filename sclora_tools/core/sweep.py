"""The beta sweep as pure maths: for one layer and many betas, the SC-LoRA subspace and the share
of Cov+ and Cov- energy it captures, with the work that does not depend on beta done once.

What is shared across betas (per layer): the output covariances W C W^T (input sites), or the
QR of W and the reduced R C R^T where d_out > d_in, and their traces. What is not: the
eigenvectors of (1 - beta) Cov+ - beta Cov- change with beta unless Cov+ and Cov- commute, so
each beta costs one symmetric eigensolve of the (reduced) size, by the solver init would use (the
certified Krylov one where r << d). Each beta's answer is the one `subspace.select_subspace`
gives (within float rounding, or the Krylov certificate): the same problem, the same reduction,
the same fallback to the full problem where the reduced one cannot decide.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import subspace


@dataclass(frozen=True)
class PreparedSite:
    """Cov+ and Cov- of a layer's output in the coordinates the eigenproblem is solved in:
    the output itself, or range(W) (basis `lift`, d_out x d_in) where d_out > d_in."""

    pos: torch.Tensor
    neg: torch.Tensor
    lift: torch.Tensor | None
    trace_pos: float
    trace_neg: float
    source: tuple[torch.Tensor, torch.Tensor, torch.Tensor, str]  # (W, Cov+, Cov-, side) for the fallback


@dataclass(frozen=True)
class BetaPoint:
    """One layer at one beta: captured energies tr(Q^T Cov Q) and the objective R(S)."""

    captured_pos: float
    captured_neg: float
    objective: float


def projected(weight64: torch.Tensor, cov: torch.Tensor) -> torch.Tensor:
    return subspace.symmetrize(weight64 @ cov.to(torch.float64) @ weight64.T)


def prepare_site(weight: torch.Tensor, cov_pos: torch.Tensor, cov_neg: torch.Tensor, side: str) -> PreparedSite:
    w = weight.to(torch.float64)
    source = (w, cov_pos, cov_neg, side)
    if side == "output":
        pos, neg, lift = cov_pos.to(torch.float64), cov_neg.to(torch.float64), None
    elif side != "input":
        raise ValueError(f"side must be 'input' or 'output', got {side!r}")
    elif w.shape[0] > w.shape[1]:
        lift, r = torch.linalg.qr(w, mode="reduced")
        pos, neg = projected(r, cov_pos), projected(r, cov_neg)
    else:
        pos, neg, lift = projected(w, cov_pos), projected(w, cov_neg), None
    return PreparedSite(pos, neg, lift, float(torch.trace(pos)), float(torch.trace(neg)), source)


def solve(site: PreparedSite, beta: float, rank: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(basis in solving coordinates, eigenvalues, captured-energy matrices) for one beta."""
    delta = subspace.delta_covariance(site.pos, site.neg, beta)
    chosen = subspace.top_eigenpairs_dispatched(delta, min(rank, site.pos.shape[0]), beta)
    reduced_ok = site.lift is None or (chosen.eigenvalues.numel() == rank and not bool((chosen.eigenvalues < 0).any()))
    if reduced_ok:
        return chosen.basis, chosen.eigenvalues, (site.pos, site.neg)
    # the reduced problem cannot split the zero eigenspace: the full one, densely, which is where
    # select_subspace ends up too (its reduced Krylov and reduced eigh refuse for the same reason)
    w, cov_pos, cov_neg, _ = site.source
    full = subspace.top_eigenpairs(subspace.output_covariance(w, subspace.delta_covariance(cov_pos, cov_neg, beta)), rank)
    return full.basis, full.eigenvalues, (projected(w, cov_pos), projected(w, cov_neg))


def sweep_site(site: PreparedSite, betas: list[float], rank: int) -> list[BetaPoint]:
    points = []
    for beta in betas:
        basis, eigenvalues, (pos, neg) = solve(site, beta, rank)
        points.append(BetaPoint(captured_pos=float(torch.trace(basis.T @ pos @ basis)),
                                captured_neg=float(torch.trace(basis.T @ neg @ basis)),
                                objective=float(eigenvalues.sum())))
    return points


def share(captured: float, total: float) -> float:
    return captured / total if total > 0 else 0.0
