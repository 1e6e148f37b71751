"""A certified mixed-precision dense eigh: the top r eigenpairs of a symmetric float64 matrix from
a float32 eigh, refined and certified in float64. Tensors in, tensors out.

A float32 eigh takes half a float64 one's time, but its eigenvalues are off by ~eps32 ||M||, which
on calibration covariances can exceed the gaps near r. So it only supplies a start:
1. `massive_pairs`: the few massive-activation directions that make ||M|| large (SmolLM2's q_proj
   at beta 0.9: -503 against -73 next) are found by float64 subspace iteration and taken out
   exactly, M' = M - sum theta v v^T, so float32's error scales with what is left.
2. A float32 eigh of M', scaled by a power of two (exactly) into float32's range: no overflow,
   and no entries lost to subnormals but those under 2^-149 of the largest.
3. Its top block_size(r) eigenvectors, with the massive ones, start core.eigen's block Krylov
   space on the float64 matrix; its Rayleigh-Ritz pairs carry the reward certificate of
   core.eigen, the cut chosen with the float32 spectrum as an estimate of what lies beyond.
4. `complement_below` then proves that certificate's premise: a float64 Cholesky shows M stays
   under tau on the complement of the cut's span. (Krylov from a random start only estimates
   tau; a float32 start is not random: a top eigenvector float32 misplaced below the block is
   orthogonal to it, and the Ritz values cannot see it missing. Measured on SmolLM2 at rank 64,
   beta 0.9, before this proof: bounds of 1e-11 claimed, shortfalls of 2e-5.)
None when any step fails; the caller then solves in float64.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from . import eigen

# From 2,048 dimensions: measured (bench/mixed_eigh.py, 1 thread, the Cholesky proof included)
# 1.21x on the hidden-2048 Llama's dense problems, 1.65x at 4096 x rank 256; 1.05x at 1,024 and
# below 1 at SmolLM2's 576.
MIXED_MIN_DIM = 2048
MIXED_BLOCKS = 3  # the float32 eigenvectors, then at most two Krylov blocks of refinement
# Massive-activation directions: in SmolLM2 one eigenvalue of dCov is 7-40x the next largest in
# magnitude. Ten steps of subspace iteration on two columns resolve it (~1 ms at 576 dimensions).
DEFLATE_COLUMNS = 2
DEFLATE_STEPS = 10
FLOAT32_ROUNDOFF = 2.0**-24
FLOAT64_ROUNDOFF = 2.0**-53


def worth_mixed(dim: int, rank: int) -> bool:
    """Whether `mixed_top` pays on a dim x dim problem: from MIXED_MIN_DIM dimensions, where the
    block is at most a third of them."""
    return dim >= MIXED_MIN_DIM and 3 * eigen.block_size(rank) <= dim


def mixed_top_where_worth(matrix: torch.Tensor, rank: int, allowed: bool = True) -> eigen.Eigenpairs | None:
    """`mixed_top` where it is `allowed` and `worth_mixed`, else None (the caller's float64 eigh)."""
    return mixed_top(matrix, rank) if allowed and worth_mixed(matrix.shape[0], rank) else None


def mixed_top(matrix: torch.Tensor, rank: int, *, tolerance: float = eigen.REWARD_TOLERANCE) -> eigen.Eigenpairs | None:
    """Top-r eigenpairs with the reward certified within `tolerance` (relative), or None."""
    matrix = eigen.symmetrize(matrix.to(torch.float64))
    values, massive = massive_pairs(matrix)
    deflated = torch.addmm(matrix, massive * values, massive.T, alpha=-1.0) if values.numel() else matrix
    solved = float32_eigh(deflated)
    if solved is None:
        return None
    spectrum, top = without_deflated(*solved, massive, eigen.block_size(rank))
    start = torch.cat([massive, eigen.orthonormal_extension(massive, top)], dim=1)
    ceilings = spectrum_estimate(spectrum, values, float(deflated.norm()))
    found = eigen.krylov_top(eigen.DenseOperator(matrix), rank, tolerance=tolerance, max_dim=MIXED_BLOCKS * start.shape[1],
                             start=start, check_from_blocks=1, ceilings=ceilings)
    if found is None or not complement_below(matrix, found.cut_vectors, found.rest_bound):
        return None
    return dataclasses.replace(found, solver="mixed")


def massive_pairs(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(values, vectors) of the largest-magnitude eigenpairs that DEFLATE_STEPS of subspace
    iteration resolve to float32's precision relative to themselves (residual <= 2^-24 |theta|).
    Often none."""
    block = eigen.starting_block(matrix.shape[0], DEFLATE_COLUMNS, 1, matrix.device)
    for _ in range(DEFLATE_STEPS):
        block = torch.linalg.qr(matrix @ block)[0]
    image = matrix @ block
    theta, rotation = torch.linalg.eigh(eigen.symmetrize(block.T @ image))
    vectors = block @ rotation
    converged = (image @ rotation - vectors * theta).norm(dim=0) <= FLOAT32_ROUNDOFF * theta.abs()
    return theta[converged], vectors[:, converged]


def float32_eigh(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(eigenvalues ascending in float64, float32 eigenvectors) of a float32 eigh of `matrix`
    scaled by a power of two (exact) into float32's range; None when it fails or is not finite
    (non-finite vectors with finite values would only fail the certificate later)."""
    low, high = torch.aminmax(matrix)
    largest = max(-float(low), float(high))
    if not math.isfinite(largest):
        return None
    scale = math.ldexp(1.0, -math.frexp(largest)[1]) if largest > 0 else 1.0
    try:
        values, vectors = torch.linalg.eigh((matrix * scale).to(torch.float32))
    except torch.linalg.LinAlgError:
        return None
    if not bool(torch.isfinite(values).all()):
        return None
    return values.to(torch.float64) / scale, vectors


def without_deflated(values: torch.Tensor, vectors: torch.Tensor, massive: torch.Tensor, columns: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The float32 eigenvalues of M' and its top `columns` eigenvectors (float64), less the
    deflated directions: there M' has a spurious ~0 eigenvalue, which would otherwise sit in the top
    block wherever few eigenvalues are positive. They are the p eigenvectors that overlap the p
    massive vectors most."""
    kept = torch.arange(values.numel(), device=values.device)
    if massive.shape[1]:
        overlap = (massive.T.to(vectors.dtype) @ vectors).square().sum(dim=0)
        keep = torch.ones_like(values, dtype=torch.bool)
        keep[torch.topk(overlap, massive.shape[1]).indices] = False
        kept = kept[keep]
    return values[kept], vectors[:, kept[-columns:]].to(torch.float64)


def spectrum_estimate(spectrum: torch.Tensor, massive_values: torch.Tensor, deflated_norm: float) -> torch.Tensor:
    """Estimates of M's eigenvalues, descending, for `reward_check`'s ceilings (index d: -inf,
    nothing beyond): the float32 eigenvalues of M' (deflated directions dropped) with the massive
    values put back, raised by float32's error, ~2^-24 sqrt(d) ||M'||. Only estimates (MKL's float32
    eigh was seen 4 sqrt(d) eps ||M'|| off); they steer the cut, `complement_below` proves it."""
    every = torch.cat([spectrum, massive_values]).sort(descending=True).values
    error = FLOAT32_ROUNDOFF * math.sqrt(every.numel()) * deflated_norm
    return torch.cat([every + error, torch.tensor([-math.inf], dtype=every.dtype, device=every.device)])


def complement_below(matrix: torch.Tensor, span: torch.Tensor, level: float) -> bool:
    """Whether x^T M x < level for every unit x orthogonal to `span` (orthonormal columns): the
    premise of core.eigen's reward bound with tau = level. A = level I - M + c span span^T with c
    large is positive definite only if level - x^T M x > 0 on that complement; its float64
    Cholesky decides, at level lowered by twice the bound on the Cholesky's backward error,
    gamma_{d+1} tr(A) (Higham, Accuracy and Stability of Numerical Algorithms, Thm 10.3)."""
    if not math.isfinite(level):
        return False
    dim = matrix.shape[0]
    shift = 2.0 * (float(matrix.norm()) + abs(level))
    probe = torch.addmm(matrix, span, span.T, beta=-1.0, alpha=shift)
    trace = dim * level - float(torch.trace(matrix)) + shift * float(span.square().sum())
    margin = 2.0 * (dim + 1) * FLOAT64_ROUNDOFF * abs(trace) / (1.0 - (dim + 1) * FLOAT64_ROUNDOFF)
    probe.diagonal().add_(level - margin)
    return int(torch.linalg.cholesky_ex(probe)[1]) == 0
