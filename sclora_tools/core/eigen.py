"""The r eigenpairs of a symmetric matrix with the LARGEST ALGEBRAIC eigenvalues, for r << d.

Two solvers, one answer (a third, core.mixed_eigen, starts this one's machinery from a float32
eigh). `dense_top` forms the matrix and calls eigh (on whatever device the matrix lives, so a
GPU's eigh when the weights are there). `krylov_top` only multiplies the
matrix with thin blocks: block Lanczos from a seeded Gaussian block of b > r columns, full
re-orthogonalisation (classical Gram-Schmidt, twice), Rayleigh-Ritz on the whole Krylov space
every time it has grown by a fifth, all in float64. It returns Ritz pairs only with a
certificate that their reward R = theta_1 + .. + theta_r (= tr(V^T M V) of the returned
vectors) is within REWARD_TOLERANCE of the best, lambda_1 + .. + lambda_r, which is what SC-LoRA
maximises and what the dense solver returns:

    Take the top k >= r Ritz vectors Q (residuals R = M Q - Q Theta) and tau >= the top of M on
    the complement of span(Q). For any orthonormal V = Q C + Q_perp S (s = ||S||_F^2),
    tr(V^T M V) <= sum_{i<=r} theta_i - s (theta_r - tau) + 2 sqrt(s) ||R||_F, whose maximum over
    s is ||R||_F^2 / (theta_r - tau). By Ky Fan, the best reward is such a trace, so
        0 <= sum_{i<=r} lambda_i - sum_{i<=r} theta_i <= ||R_k||_F^2 / (theta_r - tau_k),
    and, theta_i <= lambda_i being Cauchy's interlacing, each theta_i is within that bound too.
    tau_k is estimated from the Krylov space as theta_{k+1} + rho_{k+1} (the next Ritz value plus
    its residual norm); the cut k is the one in r..b that gives the smallest bound. The bound is
    rigorous given tau_k; the estimate is what makes it a certificate in practice, as it was for
    the sin-theta one before: a top eigenvector the seeded Gaussian start block is orthogonal to
    would escape it (a probability-zero event for a generic matrix).

The cut may lie past r (k > r, below the r-th value): a cluster straddling r and r + 1 (where the r-th vector is not unique,
and any choice of it gives the same reward) is certified by cutting below the cluster. Where the
true r-th gap g = lambda_r - lambda_{r+1} is open, the same bound holds the subspace too:
||sin Theta||_F^2 <= bound / g. When no cut reaches the tolerance before the space fills half
the dimension (the top of the spectrum crowded beyond the block), `krylov_top` returns None and
the caller solves densely.

When it pays: on calibration covariances (dCov at beta = 0.5 has large negative eigenvalues and
relative gaps of 1e-4 at r = 16..64) the certificate is reached at 7-13 blocks (where a
sin-theta certificate of the subspace needed 12-20). Past about half the dimension the
Rayleigh-Ritz solves cost as much as one dense eigh, so Krylov is tried only where the dense
problem has at least KRYLOV_DIM_PER_BLOCK x b dimensions (and KRYLOV_MIN_DIM): r = 16 from 512
(so SmolLM2's 576), r = 64 from 1,600 (2048, and Llama-2-7B's 4096), r = 128 from 3,200; above
beta 0.75 the caller asks for twice that (subspace.krylov_dims_per_block).
Measured on 2 cores at hidden 2048: 17 blocks' worth of dimensions still certified 3 layers of 5
and gained 12%; 13 certified none and cost 1.5x the dense eigh.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

REWARD_TOLERANCE = 1e-7  # relative to |R|: ten times under the 1e-6 asked of the fast path, as tau_k is estimated
KRYLOV_DIM_PER_BLOCK = 20  # Krylov where the dense problem has >= 20 blocks' worth of dimensions
KRYLOV_MIN_DIM = 512  # below this a dense eigh costs a few milliseconds: not worth a try
CHECK_FROM_BLOCKS = 8  # the certificate never holds this early on covariance spectra
CHECK_GROWTH = 1.2
GAP_FLOOR = 1e-12  # a gap below this share of the spectrum's width is no gap
# Measured on calibration covariances (SmolLM2, wide Llama and 7B-shape blocks, beta 0.5-0.99):
# once a cut has a gap the relative bound falls 0.85-2 decades per block, and the first finite
# bound, 2-3 blocks after the last check without one, was 1e-3 to 5e-1.
OPTIMISTIC_DECADES_PER_BLOCK = 1.5
FIRST_GAP_BLOCKS = 2
FIRST_BOUND = 1e-2


@dataclass(frozen=True)
class Eigenpairs:
    """values: descending (r,), vectors: orthonormal columns (d x r), both float64. `solver` says
    which solver produced them; `reward_bound` is the Krylov (or mixed-precision) certificate, 0 for
    a float64 eigh: the best reward exceeds values.sum() by at most this. `cut_vectors` (d x k,
    k >= r, the first r are `vectors`) are the pairs the certificate was taken over and
    `rest_bound` the top of the spectrum beyond them (estimated by Krylov, proven by
    core.mixed_eigen on the matrix it was given: for the reduced K = L^T dCov L, up to the
    Cholesky factor's rounding, O(u kappa(W)^2)); None for a dense answer (the cut is then at r)."""

    values: torch.Tensor
    vectors: torch.Tensor
    solver: str
    reward_bound: float = 0.0
    krylov_dim: int = 0
    rest_bound: float = math.inf
    cut_vectors: torch.Tensor | None = None

    @property
    def certified_span(self) -> torch.Tensor:
        return self.vectors if self.cut_vectors is None else self.cut_vectors


class DenseOperator:
    """M given as a formed symmetric matrix."""

    def __init__(self, matrix: torch.Tensor) -> None:
        self.matrix = matrix.to(torch.float64)
        self.dim, self.device = matrix.shape[0], matrix.device

    def __call__(self, block: torch.Tensor) -> torch.Tensor:
        return self.matrix @ block

    def dense(self) -> torch.Tensor:
        return self.matrix

    def dense_dim(self) -> int:
        return self.dim


class CongruenceOperator:
    """K = L^T D L (L lower triangular, from W^T W = L L^T): where d_out > d_in, W D W^T has the
    nonzero spectrum of this d_in x d_in matrix (W = U L^T with U = W L^-T orthonormal)."""

    def __init__(self, factor: torch.Tensor, inner: torch.Tensor) -> None:
        self.factor = factor.to(torch.float64)
        self.inner = inner.to(device=factor.device, dtype=torch.float64)
        self.dim, self.device = factor.shape[0], factor.device

    def __call__(self, block: torch.Tensor) -> torch.Tensor:
        return self.factor.T @ (self.inner @ (self.factor @ block))

    def dense_dim(self) -> int:
        return self.dim


class SandwichOperator:
    """M = W D W^T (d_out x d_out) without forming it: M X = W (D (W^T X))."""

    def __init__(self, weight: torch.Tensor, inner: torch.Tensor) -> None:
        self.weight = weight.to(torch.float64)
        self.inner = inner.to(device=weight.device, dtype=torch.float64)
        self.dim, self.device = weight.shape[0], weight.device

    def __call__(self, block: torch.Tensor) -> torch.Tensor:
        return self.weight @ (self.inner @ (self.weight.T @ block))

    def dense(self) -> torch.Tensor:
        return self.weight @ self.inner @ self.weight.T

    def dense_dim(self) -> int:
        """Size of the dense eigenproblem: d_in where d_out > d_in (the QR-reduced problem)."""
        return min(self.weight.shape)


def symmetrize(matrix: torch.Tensor) -> torch.Tensor:
    return 0.5 * (matrix + matrix.T)


def dense_top(matrix: torch.Tensor, rank: int) -> Eigenpairs:
    """Top `rank` eigenpairs by a full eigh, on the matrix's own device."""
    values, vectors = torch.linalg.eigh(symmetrize(matrix.to(torch.float64)))
    order = torch.argsort(values, descending=True)[:rank]
    return Eigenpairs(values=values[order], vectors=vectors[:, order], solver="eigh")


def block_size(rank: int) -> int:
    """Columns per Krylov block: more than r, so clusters across r / r+1 are seen."""
    return rank + max(4, rank // 4)


def krylov_budget(operator) -> int:
    """Largest Krylov dimension worth building: half the dense problem's."""
    return operator.dense_dim() // 2


def worth_krylov(operator, rank: int, dims_per_block: int) -> bool:
    """Whether the dense problem is big enough for a Krylov try: >= KRYLOV_MIN_DIM dimensions and
    >= `dims_per_block` blocks' worth of them (subspace.krylov_dims_per_block picks it by beta)."""
    dim = operator.dense_dim()
    return dim >= KRYLOV_MIN_DIM and dim >= dims_per_block * block_size(rank)


def starting_block(dim: int, columns: int, seed: int, device: torch.device) -> torch.Tensor:
    """A seeded Gaussian block, orthonormalised (the same on every machine up to BLAS rounding)."""
    generator = torch.Generator().manual_seed(seed)
    block = torch.randn(dim, columns, generator=generator, dtype=torch.float64)
    return torch.linalg.qr(block.to(device))[0]


def orthonormal_extension(basis: torch.Tensor, block: torch.Tensor) -> torch.Tensor:
    """Orthonormal columns spanning what `block` adds to span(basis); drops directions that are
    numerically inside span(basis) (an exhausted Krylov space)."""
    block = block / block.norm(dim=0).clamp_min(torch.finfo(torch.float64).tiny)
    for _ in range(2):
        block = block - basis @ (basis.T @ block)
    left, singular, _ = torch.linalg.svd(block, full_matrices=False)
    return left[:, singular > 1e-10]


class KrylovSpace:
    """An orthonormal basis V of a block Krylov space, its image M V and the projection V^T M V,
    grown one block at a time into preallocated storage of max_dim columns."""

    def __init__(self, operator, start: torch.Tensor, max_dim: int) -> None:
        self.operator, self.max_dim = operator, max(max_dim, start.shape[1])
        self.storage = torch.empty(operator.dim, self.max_dim, dtype=torch.float64, device=start.device)
        self.image_storage = torch.empty_like(self.storage)
        self.projected_storage = torch.empty(self.max_dim, self.max_dim, dtype=torch.float64, device=start.device)
        self.dim, self.newest = 0, slice(0, 0)
        self.append(start)

    @property
    def basis(self) -> torch.Tensor:
        return self.storage[:, : self.dim]

    @property
    def image(self) -> torch.Tensor:
        return self.image_storage[:, : self.dim]

    @property
    def projected(self) -> torch.Tensor:
        return self.projected_storage[: self.dim, : self.dim]

    def append(self, block: torch.Tensor) -> None:
        image = self.operator(block)
        old, new = slice(0, self.dim), slice(self.dim, self.dim + block.shape[1])
        self.storage[:, new], self.image_storage[:, new] = block, image
        cross = self.image_storage[:, old].T @ block
        self.projected_storage[old, new], self.projected_storage[new, old] = cross, cross.T
        self.projected_storage[new, new] = symmetrize(block.T @ image)
        self.dim, self.newest = new.stop, new

    def grow(self) -> bool:
        """Add the next block (M times the newest one, orthogonalised); False when the space is
        exhausted or full."""
        extension = orthonormal_extension(self.basis, self.image_storage[:, self.newest])
        if extension.shape[1] == 0 or self.dim + extension.shape[1] > self.max_dim:
            return False
        self.append(extension)
        return True


@dataclass(frozen=True)
class RitzCheck:
    values: torch.Tensor
    vectors: torch.Tensor
    reward_bound: float
    rest_bound: float
    cut_vectors: torch.Tensor

    def relative_bound(self) -> float:
        """The bound over the smallest |best reward| it allows (inf when that could be 0)."""
        room = abs(float(self.values.sum())) - self.reward_bound
        return self.reward_bound / room if room > 0 else math.inf


def reward_check(vectors: torch.Tensor, image: torch.Tensor, theta: torch.Tensor, rank: int, rest: float | None = None,
                 width: float = 1.0, ceilings: torch.Tensor | None = None) -> RitzCheck:
    """Ritz pairs (theta descending, vectors, image = M vectors; m >= r columns): the reward bound
    of the module docstring at the best cut k in r..m-1, with tau_k = theta_{k+1} + rho_{k+1}.
    With `rest` (an estimate of the top beyond all m columns) the cut is at m. A gap below
    GAP_FLOOR of the spectrum's width counts as none: the bound is then infinite. `ceilings`
    (estimates of lambda_{k+1} of M from elsewhere: core.mixed_eigen) raise tau_k to at least
    ceilings[k], and a cut k counts only where theta_k - ||R_k||_F > ceilings[k] (were ceilings[k]
    >= lambda_{k+1}, Kahan's theorem would match the k Ritz values to the top k eigenvalues). They
    only steer the choice of the cut; the caller proves its tau (core.mixed_eigen.complement_below)."""
    m = vectors.shape[1]
    norms = (image - vectors * theta[:m]).norm(dim=0)
    captured = norms.square().cumsum(0)  # captured[k - 1] = ||R_k||_F^2
    if rest is None:
        cuts, rests = torch.arange(rank, m, device=theta.device), (theta[rank:m] + norms[rank:m])
    else:
        cuts, rests = torch.tensor([m], device=theta.device), torch.tensor([rest], dtype=theta.dtype, device=theta.device)
    gaps = theta[rank - 1] - rests
    if ceilings is not None:
        limits = ceilings[cuts]
        rests = torch.maximum(rests, limits)
        matched = theta[cuts - 1] - captured[cuts - 1].sqrt() > limits
        gaps = torch.where(matched, theta[rank - 1] - rests, -math.inf)
    bounds = torch.where(gaps > GAP_FLOOR * width, captured[cuts - 1] / gaps.clamp_min(math.ulp(0.0)), math.inf)
    best = int(torch.argmin(bounds)) if bounds.numel() else 0
    bound = float(bounds[best]) if bounds.numel() else math.inf
    cut = int(cuts[best]) if cuts.numel() else m
    return RitzCheck(values=theta[:rank], vectors=vectors[:, :rank], reward_bound=bound,
                     rest_bound=float(rests[best]) if rests.numel() else math.inf, cut_vectors=vectors[:, :cut])


def rayleigh_ritz(space: KrylovSpace, rank: int, columns: int, ceilings: torch.Tensor | None = None) -> RitzCheck:
    """Top-r Ritz pairs of the space and their reward bound over cuts up to `columns` (the
    block's width: Ritz pairs further down have not converged enough to cut at)."""
    theta, y = torch.linalg.eigh(space.projected)
    theta, y = theta.flip(0), y.flip(1)
    top = y[:, : min(columns + 1, space.dim)]
    return reward_check(space.basis @ top, space.image @ top, theta, rank, width=float(theta[0] - theta[-1]) or 1.0,
                        ceilings=ceilings)


def krylov_top(operator, rank: int, *, seed: int = 0, tolerance: float = REWARD_TOLERANCE, max_dim: int | None = None,
               start: torch.Tensor | None = None, check_from_blocks: int = CHECK_FROM_BLOCKS,
               ceilings: torch.Tensor | None = None) -> Eigenpairs | None:
    """Top-r eigenpairs by block Lanczos with a certified reward, or None when not certified within
    max_dim (`tolerance` is relative to the reward). `start`: orthonormal columns to grow the
    space from (default: a seeded Gaussian block of block_size(r)). The certificate is checked once
    the space holds `check_from_blocks` blocks, then whenever it has grown by CHECK_GROWTH (each
    check costs an eigh of the projected matrix); a failed check gives up early when even an
    optimistic extrapolation (`blocks_still_needed`) cannot certify within max_dim, so the
    caller's dense solve starts sooner. `ceilings`: estimates of M's eigenvalues (`reward_check`)
    where the start block is not random."""
    max_dim = krylov_budget(operator) if max_dim is None else max_dim
    if start is None:
        start = starting_block(operator.dim, min(block_size(rank), operator.dim), seed, operator.device)
    columns = start.shape[1]
    space = KrylovSpace(operator, start, max_dim)
    next_check, last = min(check_from_blocks * columns, operator.dim), None
    while True:
        if space.dim >= next_check:
            found, now = certified(space, rank, columns, tolerance, ceilings)
            if found is not None:
                return found
            if space.dim + columns * blocks_still_needed(last, now, columns, tolerance) > max_dim:
                return None
            last, next_check = now, int(space.dim * CHECK_GROWTH)
        if not space.grow():
            return None if last is not None and last[0] == space.dim else certified(space, rank, columns, tolerance, ceilings)[0]


def blocks_still_needed(last: tuple[int, float] | None, now: tuple[int, float], columns: int, tolerance: float) -> float:
    """Blocks until the relative bound meets `tolerance`, extrapolated optimistically from the
    (dim, bound) of the last two checks: at the bound's measured convergence rate, never slower
    than OPTIMISTIC_DECADES_PER_BLOCK; where no cut has a gap yet, FIRST_GAP_BLOCKS more until one
    has, at FIRST_BOUND."""
    dim, bound = now
    if not math.isfinite(bound):
        return FIRST_GAP_BLOCKS + math.log10(FIRST_BOUND / tolerance) / OPTIMISTIC_DECADES_PER_BLOCK
    rate = OPTIMISTIC_DECADES_PER_BLOCK
    if last is not None and math.isfinite(last[1]) and last[1] > bound:
        rate = max(rate, math.log10(last[1] / bound) * columns / (dim - last[0]))
    return math.log10(bound / tolerance) / rate


def certified(space: KrylovSpace, rank: int, columns: int, tolerance: float,
              ceilings: torch.Tensor | None = None) -> tuple[Eigenpairs | None, tuple[int, float]]:
    """(the certified pairs or None, (the space's dimension, the relative bound))."""
    check = rayleigh_ritz(space, rank, columns, ceilings)
    relative = check.relative_bound()
    if not relative <= tolerance:
        return None, (space.dim, relative)
    return Eigenpairs(values=check.values, vectors=check.vectors, solver="krylov", reward_bound=check.reward_bound,
                      krylov_dim=space.dim, rest_bound=check.rest_bound, cut_vectors=check.cut_vectors), (space.dim, relative)
