"""Subspace selection for SC-LoRA (paper section 3.2, Theorem 1). Tensors in, tensors out.

All maths runs in float64. A site is either the layer's output (covariance of h directly) or
its input (covariance of x, turned into the output covariance with Cov_out = W Cov_in W^T).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Subspace:
    """An r-dim subspace of the output space: orthonormal basis (d_out x r), eigenvalues desc."""

    basis: torch.Tensor
    eigenvalues: torch.Tensor


def output_covariance(weight: torch.Tensor, input_cov: torch.Tensor) -> torch.Tensor:
    """Cov_out = W Cov_in W^T, the covariance of h = W x (bias excluded)."""
    w = weight.to(torch.float64)
    return w @ input_cov.to(torch.float64) @ w.T


def delta_covariance(cov_pos: torch.Tensor, cov_neg: torch.Tensor, beta: float) -> torch.Tensor:
    """dCov = (1 - beta) Cov+ - beta Cov-."""
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must lie in [0, 1], got {beta}")
    return (1.0 - beta) * cov_pos.to(torch.float64) - beta * cov_neg.to(torch.float64)


def symmetrize(matrix: torch.Tensor) -> torch.Tensor:
    return 0.5 * (matrix + matrix.T)


def fix_signs(vectors: torch.Tensor) -> torch.Tensor:
    """Make each column's largest-magnitude entry positive, so results do not depend on the
    eigensolver's arbitrary sign choice."""
    pivots = vectors.abs().argmax(dim=0)
    signs = torch.sign(vectors[pivots, torch.arange(vectors.shape[1])])
    signs[signs == 0] = 1.0
    return vectors * signs


def top_eigenpairs(matrix: torch.Tensor, rank: int) -> Subspace:
    """The `rank` eigenpairs of a symmetric matrix with the largest ALGEBRAIC eigenvalues."""
    values, vectors = torch.linalg.eigh(symmetrize(matrix.to(torch.float64)))
    order = torch.argsort(values, descending=True)[:rank]
    return Subspace(basis=fix_signs(vectors[:, order]), eigenvalues=values[order])


def top_eigenpairs_of_projection(weight: torch.Tensor, inner: torch.Tensor, rank: int) -> Subspace | None:
    """Top eigenpairs of W M W^T (d_out x d_out) by solving a d_in-sized problem, d_out > d_in.

    With W = U R (reduced QR), W M W^T = U (R M R^T) U^T: its nonzero spectrum is that of the
    d_in x d_in matrix R M R^T and the rest is zero on the complement of range(U). Returns None
    when that shortcut cannot decide the answer (fewer than `rank` non-negative eigenvalues, so
    the zero eigenspace would have to be split); the caller then solves the full problem.
    """
    u, r = torch.linalg.qr(weight.to(torch.float64), mode="reduced")
    small = top_eigenpairs(r @ inner.to(torch.float64) @ r.T, min(rank, r.shape[0]))
    if small.eigenvalues.numel() < rank or bool((small.eigenvalues < 0).any()):
        return None
    return Subspace(basis=fix_signs(u @ small.basis), eigenvalues=small.eigenvalues)


def select_subspace(
    weight: torch.Tensor,
    cov_pos: torch.Tensor,
    cov_neg: torch.Tensor,
    side: str,
    beta: float,
    rank: int,
) -> Subspace:
    """Q_r maximising R(S) = (1-beta) E|P_S h+|^2 - beta E|P_S h-|^2 for one layer.

    `side` says what the covariances describe: "output" (h) or "input" (x, h = W x).
    """
    d_out, d_in = weight.shape
    if side == "output":
        return top_eigenpairs(delta_covariance(cov_pos, cov_neg, beta), rank)
    if side != "input":
        raise ValueError(f"side must be 'input' or 'output', got {side!r}")
    inner = delta_covariance(cov_pos, cov_neg, beta)
    if d_out > d_in:
        reduced = top_eigenpairs_of_projection(weight, inner, rank)
        if reduced is not None:
            return reduced
    return top_eigenpairs(output_covariance(weight, inner), rank)


def captured_energy(basis: torch.Tensor, cov: torch.Tensor) -> float:
    """tr(Q^T Cov Q) / tr(Cov): the share of the covariance's energy inside span(Q)."""
    cov = cov.to(torch.float64)
    total = torch.trace(cov).item()
    if total <= 0:
        return 0.0
    q = basis.to(torch.float64)
    return torch.trace(q.T @ cov @ q).item() / total


def objective(basis: torch.Tensor, cov_pos: torch.Tensor, cov_neg: torch.Tensor, beta: float) -> float:
    """R(S) for S = span(basis) (orthonormal columns)."""
    q = basis.to(torch.float64)
    return torch.trace(q.T @ delta_covariance(cov_pos, cov_neg, beta) @ q).item()


def energy_parts_at_site(weight: torch.Tensor, basis: torch.Tensor, cov: torch.Tensor, side: str) -> tuple[float, float]:
    """(tr(Q^T C_out Q), tr(C_out)) for the OUTPUT covariance, given one collected at `side`.

    For an input site it uses tr(Q^T W C W^T Q) = tr(V^T C V) with V = W^T Q and
    tr(W C W^T) = sum(C * W^T W), never forming the d_out x d_out matrix.
    """
    q = basis.to(torch.float64)
    c = cov.to(torch.float64)
    if side == "output":
        return torch.trace(q.T @ c @ q).item(), torch.trace(c).item()
    w = weight.to(torch.float64)
    v = w.T @ q
    return torch.trace(v.T @ c @ v).item(), torch.sum(c * (w.T @ w)).item()
