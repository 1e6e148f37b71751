"""The r eigenpairs of a symmetric matrix with the LARGEST ALGEBRAIC eigenvalues, for r << d.

Two solvers, one answer. `dense_top` forms the matrix and calls eigh (on whatever device the
matrix lives, so a GPU's eigh when the weights are there). `krylov_top` only multiplies the
matrix with thin blocks: block Lanczos from a seeded Gaussian block of b > r columns, full
re-orthogonalisation (classical Gram-Schmidt, twice), Rayleigh-Ritz on the whole Krylov space
every time it has grown by a fifth, all in float64. It returns Ritz pairs only with a
certificate that they span the subspace the dense solver would return:

    Davis-Kahan sin-theta (residual form): ||sin Theta(U, X_r)||_F <= ||R||_F / delta, where
    R = M U - U diag(theta_1..theta_r) are the top r Ritz residuals and delta separates theta_r
    from the rest of the spectrum. The rest's top, lambda_{r+1}, is estimated from the Krylov
    space as theta_{r+1} + rho_{r+1} (the (r+1)-th Ritz value plus its residual norm).

The block has more columns than r, so an eigenvalue cluster that straddles r and r+1 shows up
as theta_r ~ theta_{r+1} (no gap: no certificate) even when it is exactly repeated. When the bound
does not reach the tolerance before the space fills half the dimension, `krylov_top` returns
None and the caller solves densely.

When it pays: on calibration covariances (dCov at beta = 0.5 has large negative eigenvalues and
relative gaps of 1e-4 at r = 16..64) the certificate is reached at 15-20 blocks. Past about half
the dimension the Rayleigh-Ritz solves cost as much as one dense eigh, so Krylov is tried only
where the dense problem has at least KRYLOV_DIM_PER_BLOCK x b dimensions: r = 16 from d ~ 640,
r = 64 from d ~ 2600 (so at 4096, Llama-2-7B's width), r = 128 from d ~ 5100 (70B's 8192).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SIN_THETA_TOLERANCE = 1e-6  # below B_init's own exact-grid quantum, 2^-21 ~ 4.8e-7 per entry
KRYLOV_DIM_PER_BLOCK = 32  # Krylov where the dense problem has >= 32 blocks' worth of dimensions
KRYLOV_MIN_DIM = 1024  # below this a dense eigh costs tens of milliseconds: not worth a try
CHECK_FROM_BLOCKS = 8  # the certificate never holds this early on covariance spectra
CHECK_GROWTH = 1.2
GAP_FLOOR = 1e-12  # a gap below this share of the spectrum's width is no gap


@dataclass(frozen=True)
class Eigenpairs:
    """values: descending (r,), vectors: orthonormal columns (d x r), both float64. `solver` says
    which solver produced them; `sin_theta_bound` is the Krylov certificate (0 for dense)."""

    values: torch.Tensor
    vectors: torch.Tensor
    solver: str
    sin_theta_bound: float = 0.0
    krylov_dim: int = 0
    rest_bound: float = math.inf  # estimated top of the rest of the spectrum: theta_{r+1} + rho_{r+1}


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


def worth_krylov(operator, rank: int) -> bool:
    dim = operator.dense_dim()
    return dim >= KRYLOV_MIN_DIM and dim >= KRYLOV_DIM_PER_BLOCK * block_size(rank)


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
    sin_theta_bound: float
    rest_bound: float


def davis_kahan(vectors: torch.Tensor, image: torch.Tensor, theta: torch.Tensor, rank: int, rest: float | None = None,
                width: float = 1.0) -> RitzCheck:
    """Ritz pairs (theta, vectors), image = M vectors, at least r + 1 of them unless `rest` (an
    estimate of lambda_{r+1}) is given: ||sin Theta||_F <= ||R_r||_F / (theta_r - rest), with
    rest = theta_{r+1} + rho_{r+1} by default. Infinite when there is no gap."""
    residual = image - vectors * theta[: vectors.shape[1]]
    if rest is None:
        rest = float(theta[rank] + residual[:, rank].norm())
    gap = float(theta[rank - 1]) - rest
    bound = float(residual[:, :rank].norm()) / gap if gap > GAP_FLOOR * width else math.inf
    return RitzCheck(values=theta[:rank], vectors=vectors[:, :rank], sin_theta_bound=bound, rest_bound=rest)


def rayleigh_ritz(space: KrylovSpace, rank: int) -> RitzCheck:
    """Top-r Ritz pairs of the space and their Davis-Kahan bound (module docstring)."""
    theta, y = torch.linalg.eigh(space.projected)
    theta, y = theta.flip(0), y.flip(1)
    top = y[:, : rank + 1]
    return davis_kahan(space.basis @ top, space.image @ top, theta, rank, width=float(theta[0] - theta[-1]) or 1.0)


def krylov_top(operator, rank: int, *, seed: int = 0, tolerance: float = SIN_THETA_TOLERANCE,
               max_dim: int | None = None) -> Eigenpairs | None:
    """Certified top-r eigenpairs by block Lanczos, or None when not certified within max_dim.
    The certificate is checked once the space holds CHECK_FROM_BLOCKS blocks, then whenever it
    has grown by CHECK_GROWTH (each check costs an eigh of the projected matrix)."""
    max_dim = krylov_budget(operator) if max_dim is None else max_dim
    columns = min(block_size(rank), operator.dim)
    space = KrylovSpace(operator, starting_block(operator.dim, columns, seed, operator.device), max_dim)
    next_check, checked = min(CHECK_FROM_BLOCKS * columns, operator.dim), 0
    while True:
        if space.dim >= next_check:
            found, checked = certified(space, rank, tolerance), space.dim
            if found is not None:
                return found
            next_check = int(space.dim * CHECK_GROWTH)
        if not space.grow():
            return None if checked == space.dim else certified(space, rank, tolerance)


def certified(space: KrylovSpace, rank: int, tolerance: float) -> Eigenpairs | None:
    check = rayleigh_ritz(space, rank)
    if check.sin_theta_bound > tolerance:
        return None
    return Eigenpairs(values=check.values, vectors=check.vectors, solver="krylov",
                      sin_theta_bound=check.sin_theta_bound, krylov_dim=space.dim, rest_bound=check.rest_bound)
