"""Subspace selection for SC-LoRA (paper section 3.2, Theorem 1). Tensors in, tensors out.

All maths runs in float64 (but for the float32 eigh that starts the mixed-precision solver,
whose answer is refined and certified in float64). A site is either the layer's output
(covariance of h directly) or its input (covariance of x, turned into the output covariance with
Cov_out = W Cov_in W^T). Where r << d the top eigenpairs come from the certified block Krylov
solver (core.eigen), which never forms W Cov_in W^T; otherwise, and whenever its certificate
fails, from a dense solve on the covariances' device (a GPU's eigh when they live there): the
certified mixed-precision one from 2,048 dimensions, else (or when its certificate fails) a
float64 eigh.
"""

from __future__ import annotations

import dataclasses
import threading
import weakref
from dataclasses import dataclass

import torch

from . import eigen, mixed_eigen


@dataclass(frozen=True)
class Subspace:
    """An r-dim subspace of the output space: orthonormal basis (d_out x r), eigenvalues desc.
    `reward_bound`: how far R(S) = eigenvalues.sum() may fall short of the best (the certificate
    of Krylov, core.eigen, or of the mixed-precision solver, core.mixed_eigen; 0 for a float64 eigh)."""

    basis: torch.Tensor
    eigenvalues: torch.Tensor
    solver: str = "eigh"
    reward_bound: float = 0.0


def output_covariance(weight: torch.Tensor, input_cov: torch.Tensor) -> torch.Tensor:
    """Cov_out = W Cov_in W^T, the covariance of h = W x (bias excluded)."""
    w = weight.to(torch.float64)
    return w @ input_cov.to(torch.float64) @ w.T


def delta_covariance(cov_pos: torch.Tensor, cov_neg: torch.Tensor, beta: float) -> torch.Tensor:
    """dCov = (1 - beta) Cov+ - beta Cov-."""
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must lie in [0, 1], got {beta}")
    return (1.0 - beta) * cov_pos.to(torch.float64) - beta * cov_neg.to(torch.float64)


symmetrize = eigen.symmetrize


def fix_signs(vectors: torch.Tensor) -> torch.Tensor:
    """Make each column's largest-magnitude entry positive, so results do not depend on the
    eigensolver's arbitrary sign choice."""
    pivots = vectors.abs().argmax(dim=0)
    signs = torch.sign(vectors[pivots, torch.arange(vectors.shape[1])])
    signs[signs == 0] = 1.0
    return vectors * signs


def top_eigenpairs(matrix: torch.Tensor, rank: int) -> Subspace:
    """The `rank` eigenpairs of a symmetric matrix with the largest ALGEBRAIC eigenvalues, by a
    float64 eigh: the reference every faster route is held to."""
    found = eigen.dense_top(matrix, rank)
    return Subspace(basis=fix_signs(found.vectors), eigenvalues=found.values)


def formed_eigenpairs(matrix: torch.Tensor, rank: int, mixed: bool = True) -> Subspace:
    """`top_eigenpairs` of a formed matrix by the faster mixed-precision solver where it pays (and
    `mixed`: `top_is_resolvable`) and its certificate holds (core.mixed_eigen), else by the float64 eigh."""
    found = mixed_eigen.mixed_top_where_worth(matrix, rank, mixed)
    if found is None:
        return top_eigenpairs(matrix, rank)
    return Subspace(basis=fix_signs(found.vectors), eigenvalues=found.values, solver=found.solver, reward_bound=found.reward_bound)


def top_eigenpairs_of_projection(weight: torch.Tensor, inner: torch.Tensor, rank: int, mixed: bool = True) -> Subspace | None:
    """Top eigenpairs of W M W^T (d_out x d_out) by solving a d_in-sized problem, d_out > d_in.

    With W = U R (Householder QR), W M W^T = U (R M R^T) U^T: its nonzero spectrum is that of the
    d_in x d_in matrix R M R^T and the rest is zero on the complement of range(U). U is never
    formed: its reflectors are applied to the r small eigenvectors. Returns None when that
    shortcut cannot decide the answer (fewer than `rank` non-negative eigenvalues, so the zero
    eigenspace would have to be split); the caller then solves the full problem. R^T R = W^T W is
    kept for the energy diagnostics of the same weight.
    """
    w = weight.to(torch.float64)
    d_out, d_in = w.shape
    reflectors, tau = torch.geqrf(w)
    r = reflectors[:d_in].triu()
    small = formed_eigenpairs(r @ inner.to(torch.float64) @ r.T, min(rank, d_in), mixed)
    GRAMS.put(weight, r.T @ r)
    if small.eigenvalues.numel() < rank or bool((small.eigenvalues < 0).any()):
        return None
    padded = torch.zeros(d_out, small.basis.shape[1], dtype=torch.float64, device=w.device)
    padded[:d_in] = small.basis
    return Subspace(basis=fix_signs(torch.ormqr(reflectors, tau, padded)), eigenvalues=small.eigenvalues, solver=small.solver,
                    reward_bound=small.reward_bound)  # U is orthogonal: the reward and its bound carry over


def select_subspace(
    weight: torch.Tensor,
    cov_pos: torch.Tensor,
    cov_neg: torch.Tensor,
    side: str,
    beta: float,
    rank: int,
) -> Subspace:
    """Q_r maximising R(S) = (1-beta) E|P_S h+|^2 - beta E|P_S h-|^2 for one layer.

    `side` says what the covariances describe: "output" (h) or "input" (x, h = W x). The work
    runs where the covariances live; the basis comes back on the weight's device.
    """
    if side not in ("input", "output"):
        raise ValueError(f"side must be 'input' or 'output', got {side!r}")
    inner = delta_covariance(cov_pos, cov_neg, beta)
    w = weight.to(device=inner.device, dtype=torch.float64)
    per_block = krylov_dims_per_block(beta)
    chosen = (certified_krylov(w, inner, side, rank, per_block) if per_block else None) or \
        dense_subspace(w, inner, side, rank, top_is_resolvable(beta))
    return dataclasses.replace(chosen, basis=chosen.basis.to(weight.device), eigenvalues=chosen.eigenvalues.to(weight.device))


def certified_krylov(weight: torch.Tensor, inner: torch.Tensor, side: str, rank: int, per_block: int) -> Subspace | None:
    """The block Krylov answer where r << d on a CPU and its certificate holds, else None."""
    if side == "input" and weight.shape[0] > weight.shape[1]:
        return certified_reduced_krylov(weight, inner, rank, per_block)
    operator = eigen.DenseOperator(inner) if side == "output" else eigen.SandwichOperator(weight, inner)
    return krylov_subspace(operator, rank, per_block)


def krylov_subspace(operator, rank: int, per_block: int) -> Subspace | None:
    if operator.device.type != "cpu" or not eigen.worth_krylov(operator, rank, per_block):
        return None
    found = eigen.krylov_top(operator, rank)
    if found is None:
        return None
    return Subspace(basis=fix_signs(found.vectors), eigenvalues=found.values, solver="krylov", reward_bound=found.reward_bound)


HIGH_BETA = 0.75
KRYLOV_DIM_PER_BLOCK_HIGH_BETA = 40


def krylov_dims_per_block(beta: float) -> int | None:
    """How many blocks' worth of dimensions a problem needs for a Krylov try at `beta` (None: no
    try). As beta grows, -beta Cov- dominates the top of dCov and its spread slows the certificate:
    measured, 8-13 blocks at beta <= 0.75 and 12-25 above (SmolLM2, a hidden-2048 Llama and a
    Llama-2-7B-shape block), so above HIGH_BETA Krylov needs twice the room, and where it would not
    have it a try is mostly wasted (init at beta 0.9: 11-20% slower with the low-beta rule). None
    where the top is not resolvable (beta = 1)."""
    if not top_is_resolvable(beta):
        return None
    return eigen.KRYLOV_DIM_PER_BLOCK if beta <= HIGH_BETA else KRYLOV_DIM_PER_BLOCK_HIGH_BETA


def top_is_resolvable(beta: float) -> bool:
    """Whether a fast solver (Krylov, mixed precision) is worth a try at `beta`: not at beta = 1,
    where the top of dCov = -Cov- is the crowded bottom of Cov-'s spectrum: no Krylov gap is
    resolved there, and its gaps lie under float32's error (every mixed try refused, 1.5x the
    float64 eigh's time in the sweep at 2048 x rank 16)."""
    return beta < 1.0


def top_eigenpairs_dispatched(matrix: torch.Tensor, rank: int, beta: float) -> Subspace:
    """`top_eigenpairs` of a formed dCov at `beta` by the solver select_subspace would pick for it:
    certified Krylov where r << d on a CPU (krylov_dims_per_block), else (or when not certified) the
    dense route (`formed_eigenpairs`)."""
    per_block = krylov_dims_per_block(beta)
    found = krylov_subspace(eigen.DenseOperator(matrix), rank, per_block) if per_block else None
    return found or formed_eigenpairs(matrix, rank, top_is_resolvable(beta))


def certified_reduced_krylov(weight: torch.Tensor, inner: torch.Tensor, rank: int, per_block: int) -> Subspace | None:
    """d_out > d_in: Krylov on the d_in-sized K = L^T dCov L (W^T W = L L^T, the Gram matrix the
    energy diagnostics use anyway), lifted and certified by `certified_lift`. None when any step
    cannot vouch for the answer."""
    if weight.device.type != "cpu" or not eigen.worth_krylov(eigen.SandwichOperator(weight, inner), rank, per_block):
        return None
    factor = gram_factor(weight)
    if factor is None:
        return None
    found = eigen.krylov_top(eigen.CongruenceOperator(factor, inner), rank)
    return None if found is None else certified_lift(weight, inner, factor, found, rank, "krylov")


def reduced_dense_eigenpairs(weight: torch.Tensor, inner: torch.Tensor, rank: int,
                             mixed: bool = True) -> tuple[torch.Tensor, eigen.Eigenpairs] | None:
    """(L, the top r eigenpairs of K = L^T dCov L), or None when r > d_in or W^T W has no Cholesky
    factor. Mixed precision where it pays and is certified (its cut and rest bound come along),
    else a float64 eigh with lambda_{r+1} as the rest bound."""
    d_in = weight.shape[1]
    factor = gram_factor(weight) if rank <= d_in else None
    if factor is None:
        return None
    kernel = reduced_kernel(factor, inner)
    found = mixed_eigen.mixed_top_where_worth(kernel, rank, mixed)
    if found is not None:
        return factor, found
    values, vectors = torch.linalg.eigh(kernel)
    values, vectors = values.flip(0), vectors.flip(1)
    rest = float(values[rank]) if rank < d_in else 0.0  # past d_in: the zero eigenvalues off range(W)
    return factor, eigen.Eigenpairs(values=values[:rank], vectors=vectors[:, :rank], solver="eigh", rest_bound=rest)


def reduced_kernel(factor: torch.Tensor, inner: torch.Tensor) -> torch.Tensor:
    """K = L^T dCov L: where d_out > d_in, W dCov W^T has K's nonzero spectrum (W^T W = L L^T)."""
    return symmetrize(factor.T @ inner @ factor)


def reduced_subspace(weight: torch.Tensor, inner: torch.Tensor, rank: int, mixed: bool = True) -> Subspace | None:
    """d_out > d_in: the Cholesky route, certified (its R(S) within core.eigen's REWARD_TOLERANCE of
    the best, measured on W dCov W^T itself), else the Householder one. The Cholesky route
    needs W^T W (kept for the diagnostics) where the Householder one needs a QR of the tall W and
    R^T R on top: 1.5x faster on SmolLM2's gate/up (1536 x 576). None when K's top r
    hold a negative eigenvalue: the top r of W dCov W^T then split its zero eigenspace, which only
    the full problem decides, and the Householder path would solve the same d_in-sized problem
    only to refuse it too."""
    solved = reduced_dense_eigenpairs(weight, inner, rank, mixed)
    if solved is not None and float(solved[1].values[-1]) < 0.0:
        return None
    lifted = None if solved is None else certified_lift(weight, inner, *solved, rank, f"{solved[1].solver}-reduced")
    return lifted or top_eigenpairs_of_projection(weight, inner, rank, mixed)


def gram_factor(weight: torch.Tensor) -> torch.Tensor | None:
    """L with W^T W = L L^T (Cholesky of the cached Gram), or None when W lacks full column rank."""
    factor, info = torch.linalg.cholesky_ex(GRAMS.of(weight, weight.device))
    return factor if int(info) == 0 else None


def certified_lift(weight, inner, factor, found: eigen.Eigenpairs, rank: int, solver: str) -> Subspace | None:
    """Map K's eigenvectors y (the k >= r the certificate was taken over) back by U y = W L^-T y,
    re-orthonormalise, and certify the result's reward against W dCov W^T itself: its residuals
    are measured there, so the Cholesky's squared condition number only enters through the
    estimate of the top beyond the k. None when the r-th eigenvalue is not positive (the zero
    eigenvalues of W dCov W^T would join the top r) or the certificate fails."""
    if float(found.values[-1]) <= 0.0:
        return None
    mapped = weight @ torch.linalg.solve_triangular(factor.T, found.certified_span, upper=True)
    basis = torch.linalg.qr(mapped)[0]
    image = weight @ (inner @ (weight.T @ basis))
    theta, rotation = torch.linalg.eigh(symmetrize(basis.T @ image))
    theta, rotation = theta.flip(0), rotation.flip(1)
    check = eigen.reward_check(basis @ rotation, image @ rotation, theta, rank, rest=max(found.rest_bound, 0.0),
                               width=float(theta.abs().max()) or 1.0)
    if not check.relative_bound() <= eigen.REWARD_TOLERANCE:
        return None
    return Subspace(basis=fix_signs(check.vectors), eigenvalues=check.values, solver=solver, reward_bound=check.reward_bound)


def dense_subspace(weight: torch.Tensor, inner: torch.Tensor, side: str, rank: int, mixed: bool = True) -> Subspace:
    """A dense solve (`formed_eigenpairs`: certified mixed precision or a float64 eigh): of dCov at
    an output site, of a d_in-sized reduced problem where d_out > d_in (Cholesky of W^T W,
    certified; else Householder QR of W), else of W dCov W^T."""
    d_out, d_in = weight.shape
    if side == "output":
        return formed_eigenpairs(inner, rank, mixed)
    if d_out > d_in:
        reduced = reduced_subspace(weight, inner, rank, mixed)
        if reduced is not None:
            return reduced
    return formed_eigenpairs(output_covariance(weight, inner), rank, mixed)


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
    tr(W C W^T) = sum(C * W^T W), never forming the d_out x d_out matrix. W^T W, the largest cost
    of these diagnostics, is computed once per weight tensor (upper blocks only: gram()) and
    shared by the calls for Cov+ and Cov-.
    """
    c = cov.to(torch.float64)
    q = basis.to(device=c.device, dtype=torch.float64)
    if side == "output":
        return torch.trace(q.T @ c @ q).item(), torch.trace(c).item()
    v = weight.to(device=c.device, dtype=torch.float64).T @ q
    gram = GRAMS.of(weight, c.device)
    return torch.trace(v.T @ c @ v).item(), torch.dot(c.reshape(-1), gram.reshape(-1)).item()


def gram(w: torch.Tensor, blocks: int = 4) -> torch.Tensor:
    """W^T W from the GEMMs of its upper column blocks, mirrored: (blocks + 1) / (2 blocks) of the
    flops of one W^T @ W (5/8 with 4 blocks)."""
    d = w.shape[1]
    edges = [d * i // blocks for i in range(blocks + 1)]
    out = torch.empty(d, d, dtype=w.dtype, device=w.device)
    for i in range(blocks):
        rows = slice(edges[i], edges[i + 1])
        for j in range(i, blocks):
            cols = slice(edges[j], edges[j + 1])
            out[rows, cols] = w[:, rows].T @ w[:, cols]
            if j > i:
                out[cols, rows] = out[rows, cols].T
    return out


class GramCache(threading.local):
    """W^T W of the most recent weight tensor, keyed by identity and version; one per thread
    (init computes two layers at once)."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.gram: torch.Tensor | None = None

    def of(self, weight: torch.Tensor, device: torch.device) -> torch.Tensor:
        if not self.holds(weight):
            self.put(weight, gram(weight.to(device=device, dtype=torch.float64)))
        return self.gram.to(device)

    def holds(self, weight: torch.Tensor) -> bool:
        return self.key is not None and self.key[0]() is weight and self.key[1] == weight._version

    def put(self, weight: torch.Tensor, gram: torch.Tensor) -> None:
        self.key, self.gram = (weakref.ref(weight), weight._version), gram


GRAMS = GramCache()
