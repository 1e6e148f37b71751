"""Adapter initialisations: (W0, covariances or nothing) -> initial factors (B, A), float64.

Every method satisfies W_res + s B A = W0 at init once the stage computes W_res from them
(exactly, via core.exact). Only the factors differ. The split of each decomposition between B
and A (and its division by the scale s) follows PEFT, so the factor balance that drives training
is the one PEFT users get; signs of singular vectors follow one deterministic convention.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .finite import all_finite
from .subspace import Subspace, top_eigenpairs

CORDA_FIRST_DAMPING = 0.01  # PEFT: damp = 0.01 * mean(diag(C)), doubled until the inverse is good
CORDA_INVERSE_TOLERANCE = 0.05
CORDA_MAX_DOUBLINGS = 60
ZERO_EIGENVALUE_RELATIVE = 1e-12  # eigenvalues below this share of the trace are rounding noise


@dataclass(frozen=True)
class Factors:
    """B (d_out x r) and A (r x d_in), float64, plus what the method wants recorded per layer."""

    b: torch.Tensor
    a: torch.Tensor
    details: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Method:
    """What an init method is and what it reads from a calibration.

    site: which covariance site it needs ("subspace": SC-LoRA's site of the layer, input or
    output side, whichever calibrate stored; "input": the layer's input side; None: nothing).
    roles: which datasets' covariances at that site ("pos" = D+, "neg" = D-)."""

    name: str
    summary: str
    site: str | None = None
    roles: tuple[str, ...] = ()
    uses_beta: bool = False


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("sclora", "SC-LoRA: B = top-r eigenvectors of (1-beta) Cov+ - beta Cov- of the layer output, A = B^T W0",
           site="subspace", roles=("pos", "neg"), uses_beta=True),
    Method("lora", "vanilla LoRA: Kaiming-uniform A, zero B (W_res = W0)"),
    Method("pissa", "PiSSA: top-r singular triplets of W0, sqrt(S) to each factor"),
    Method("milora", "MiLoRA: bottom-r singular triplets of W0, sqrt(S) to each factor"),
    Method("olora", "OLoRA: B = first r columns of Q, A = first r rows of R (W0 = Q R)"),
    Method("corda-ipa", "CorDA IPA: top-r components of W0 C+ (C+ = damped D+ input covariance), V = C+^-1 V'",
           site="input", roles=("pos",)),
    Method("corda-kpa", "CorDA KPA: bottom-r components of W0 C- (C- = damped D- input covariance), V = C-^-1 V'",
           site="input", roles=("neg",)),
    Method("lora-null", "LoRA-Null: W0 U U^T with U the r smallest eigenvectors of the D- input covariance, "
           "through its top-r SVD", site="input", roles=("neg",)),
)}
SUBSPACE_METHODS = tuple(name for name in METHODS if name != "lora")
"""Methods whose B_init spans a chosen r-dim subspace (B_init != 0)."""
INPUT_METHODS = tuple(name for name, m in METHODS.items() if m.site == "input")


def sclora_factors(weight: torch.Tensor, subspace: Subspace) -> Factors:
    """B_init = Q_r, A_init = Q_r^T W0 (paper eqs. 6-7), so B A x = P_S(W0 x)."""
    # A unit-norm column may hold an entry of 1 + 1 ulp after the eigensolver's rounding; the
    # exact-rebuild grid keeps unit-norm columns in [-1, 1], so clamp (a change of at most one ulp).
    q = subspace.basis.to(torch.float64).clamp(-1.0, 1.0)
    return Factors(b=q, a=q.T @ weight.to(torch.float64))


def lora_factors(weight: torch.Tensor, rank: int, seed: int) -> Factors:
    """Vanilla LoRA: A Kaiming-uniform (a = sqrt(5), as PEFT does), B = 0, so W_res = W0."""
    d_out, d_in = weight.shape
    generator = torch.Generator().manual_seed(seed)
    bound = 1.0 / math.sqrt(d_in)  # kaiming_uniform_ with a=sqrt(5) on fan_in = d_in
    a = (torch.rand(rank, d_in, generator=generator, dtype=torch.float64) * 2 - 1) * bound
    return Factors(b=torch.zeros(d_out, rank, dtype=torch.float64), a=a)


def split_triplets(u: torch.Tensor, s: torch.Tensor, v: torch.Tensor, scale: float) -> tuple[torch.Tensor, torch.Tensor]:
    """PEFT's split of U diag(S) V^T with scale s: B = U sqrt(S/s), A = sqrt(S/s) V^T, so that
    s B A = U diag(S) V^T. Signs: each column of U gets its largest entry positive (V follows)."""
    flip = column_signs(u)
    root = torch.sqrt(s / scale)
    return u * (flip * root), (v * flip).T * root.unsqueeze(1)


def column_signs(vectors: torch.Tensor) -> torch.Tensor:
    """+1 or -1 per column: the sign of its largest-magnitude entry (ties: the first)."""
    pivots = vectors.abs().argmax(dim=0)
    signs = torch.sign(vectors[pivots, torch.arange(vectors.shape[1])])
    return torch.where(signs == 0, torch.ones_like(signs), signs)


def pick(count: int, rank: int, smallest: bool) -> slice:
    """Indices of the top-r (or bottom-r) of `count` components sorted in descending order."""
    return slice(count - rank, count) if smallest else slice(0, rank)


def svd_factors(weight: torch.Tensor, rank: int, scale: float, smallest: bool = False) -> Factors:
    """PiSSA (top-r singular triplets of W0) or, with `smallest`, MiLoRA (bottom-r), as PEFT's
    init_lora_weights="pissa" does: B = U_r sqrt(S_r/s), A = sqrt(S_r/s) V_r^T."""
    u, s, vh = torch.linalg.svd(weight.to(torch.float64), full_matrices=False)
    chosen = pick(s.numel(), rank, smallest)
    b, a = split_triplets(u[:, chosen], s[chosen], vh[chosen].T, scale)
    return Factors(b=b, a=a, details={"singular_first": float(s[chosen][0]), "singular_last": float(s[chosen][-1])})


def olora_factors(weight: torch.Tensor, rank: int) -> Factors:
    """OLoRA, as PEFT's init_lora_weights="olora": W0 = Q R, B = Q[:, :r], A = R[:r] (no sqrt split,
    no division by s: W_res = W0 - s Q_r R_r)."""
    q, r = torch.linalg.qr(weight.to(torch.float64))
    return Factors(b=q[:, :rank].contiguous(), a=r[:rank].contiguous())


def corda_damping(covariance: torch.Tensor) -> float:
    """The damping PEFT's CorDA settles on for this covariance: start at 0.01 (times the mean of
    its diagonal), double until the float32 inverse of C + damp I has |C C^-1 - I|_F < 0.05.
    Run in float32 exactly as peft/tuners/lora/corda.py does, so both pick the same damping."""
    cov = covariance.to(torch.float32)
    eye = torch.eye(cov.shape[0], dtype=torch.float32)
    damp = CORDA_FIRST_DAMPING
    for _ in range(CORDA_MAX_DOUBLINGS):
        fixed = cov + torch.diag(torch.ones(cov.shape[0]) * torch.mean(torch.diag(cov)) * damp)
        if torch.dist(fixed @ torch.linalg.inv(fixed), eye).item() < CORDA_INVERSE_TOLERANCE:
            return damp
        damp *= 2
    raise ValueError("CorDA's damping did not make the input covariance invertible")


def corda_factors(weight: torch.Tensor, covariance: torch.Tensor, rank: int, scale: float, smallest: bool = False) -> Factors:
    """CorDA's context-oriented decomposition (IPA: largest components; KPA with `smallest`).

    C = Cov_in + damp mean(diag Cov_in) I; W0 C = U S V'^T; V = C^-1 V' so that U S V^T = W0;
    B = U_r sqrt(S_r/s), A = sqrt(S_r/s) V_r^T (peft/tuners/lora/layer.py corda_init)."""
    cov = covariance.to(torch.float64)
    if not all_finite(cov):
        raise ValueError("the input covariance holds NaN or Inf")
    damp = corda_damping(cov)
    fixed = cov + torch.eye(cov.shape[0], dtype=torch.float64) * (torch.mean(torch.diag(cov)) * damp)
    inverse = torch.linalg.inv(fixed)
    u, s, vh = torch.linalg.svd(weight.to(torch.float64) @ fixed, full_matrices=False)
    v = (vh @ inverse).T
    chosen = pick(s.numel(), rank, smallest)
    b, a = split_triplets(u[:, chosen], s[chosen], v[:, chosen], scale)
    return Factors(b=b, a=a, details={"damping": damp, "singular_first": float(s[chosen][0]), "singular_last": float(s[chosen][-1])})


def smallest_eigenpairs(covariance: torch.Tensor, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The `count` smallest eigenvalues (ascending) of a symmetric matrix and their eigenvectors."""
    negated = top_eigenpairs(-covariance.to(torch.float64), count)
    return -negated.eigenvalues, negated.basis


def lora_null_factors(weight: torch.Tensor, covariance: torch.Tensor, rank: int, scale: float) -> Factors:
    """LoRA-Null: U = the r smallest eigenvectors of the D- input covariance (the null space of
    the preserved data's activations); W0 U U^T becomes the adapter through its top-r SVD,
    split as PEFT splits PiSSA, and W_res = W0 (I - U U^T). Computed as the SVD of the
    d_out x r matrix W0 U: W0 U U^T = U' S (U V')^T. A's rows lie in span(U), so A x = 0 for every
    x in the covariance's principal subspace.

    details record the eigen-gap the null space sits in: the r-th and (r+1)-th smallest
    eigenvalues, their ratio and the share of the D- input energy inside the null space."""
    cov = covariance.to(torch.float64)
    values, vectors = smallest_eigenpairs(cov, min(rank + 1, cov.shape[0]))
    null = vectors[:, :rank]
    u, s, vh = torch.linalg.svd(weight.to(torch.float64) @ null, full_matrices=False)
    b, a = split_triplets(u, s, null @ vh.T, scale)
    return Factors(b=b, a=a, details=null_space_gap(values, rank, float(torch.trace(cov))))


def null_space_gap(ascending: torch.Tensor, rank: int, trace: float) -> dict:
    """inside = lambda_r, outside = lambda_(r+1) (ascending). Eigenvalues below 1e-12 tr(C) count
    as zero: then the ratio is None, and if lambda_(r+1) is zero too the null space is not unique
    (any r directions of a larger zero eigenspace would do)."""
    floor = ZERO_EIGENVALUE_RELATIVE * max(trace, 0.0)
    inside = float(ascending[rank - 1])
    outside = float(ascending[rank]) if ascending.numel() > rank else None
    return {"null_eigenvalue_inside": inside, "null_eigenvalue_outside": outside,
            "null_gap_ratio": outside / inside if outside is not None and inside > floor else None,
            "null_space_unique": outside is None or outside > floor,
            "null_energy_share": float(ascending[:rank].clamp(min=0).sum()) / trace if trace > 0 else 0.0}
