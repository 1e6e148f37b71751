"""One layer's initialisation, end to end and pure: W0 + covariances -> W_res, (A, B), the exact
correction and diagnostics."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from . import exact, methods, subspace
from .merge import lora_scale


@dataclass(frozen=True)
class InitSettings:
    """method: a name in core.methods.METHODS. beta weighs Cov+ against Cov- (sclora). rank r and
    alpha give PEFT's scale s = alpha / r (alpha / sqrt(r) with rslora). seed drives random
    inits (lora)."""

    method: str = "sclora"
    beta: float = 0.5
    rank: int = 128
    alpha: float = 128.0
    seed: int = 0
    rslora: bool = False

    @property
    def scale(self) -> float:
        return lora_scale(self.alpha, self.rank, self.rslora)


@dataclass(frozen=True)
class SiteCovariances:
    """Cov+ and Cov- of one layer at one site ("input": of x, "output": of h = W x); either may be
    None when a method does not read it."""

    pos: torch.Tensor | None
    neg: torch.Tensor | None
    side: str


@dataclass
class LayerInit:
    """W_res in the checkpoint dtype (None once a stage has written it and keeps the rest), A
    (r x d_in) and B (d_out x r) in float32 (exactly the quantised values), the correction that
    rebuilds W0, and per-layer diagnostics."""

    w_res: torch.Tensor | None
    a: torch.Tensor
    b: torch.Tensor
    correction: exact.Correction
    diagnostics: dict = field(default_factory=dict)


def require(covariance: torch.Tensor | None, side: str, method: str, role: str) -> torch.Tensor:
    if covariance is None or side != "input":
        raise ValueError(f"{method} needs the layer's input-side covariance of the {role} data")
    return covariance


def choose_factors(weight64, cov_pos, cov_neg, side, settings: InitSettings, layer_index: int):
    """Factors (float64) and, for sclora, the subspace."""
    method, rank, scale = settings.method, settings.rank, settings.scale
    if method == "sclora":
        chosen = subspace.select_subspace(weight64, cov_pos, cov_neg, side, settings.beta, rank)
        return methods.sclora_factors(weight64, chosen), chosen
    if method == "lora":
        return methods.lora_factors(weight64, rank, settings.seed + layer_index), None
    if method in ("pissa", "milora"):
        return methods.svd_factors(weight64, rank, scale, smallest=method == "milora"), None
    if method == "olora":
        return methods.olora_factors(weight64, rank), None
    if method in ("corda-ipa", "corda-kpa"):
        ipa = method == "corda-ipa"
        covariance = require(cov_pos if ipa else cov_neg, side, method, "+" if ipa else "-")
        return methods.corda_factors(weight64, covariance, rank, scale, smallest=not ipa), None
    if method == "lora-null":
        return methods.lora_null_factors(weight64, require(cov_neg, side, method, "-"), rank, scale), None
    raise ValueError(f"unknown method {method!r}")


def initialize_layer(
    weight: torch.Tensor,
    cov_pos: torch.Tensor | None,
    cov_neg: torch.Tensor | None,
    side: str,
    settings: InitSettings,
    layer_index: int = 0,
    energy_site: SiteCovariances | None = None,
) -> LayerInit:
    """`cov_pos`, `cov_neg` at `side` are what the method reads; `energy_site` (default: the same)
    is where the diagnostics measure the share of Cov+ and Cov- energy inside span(B_init)."""
    weight64 = weight.to(torch.float64)
    factors, chosen = choose_factors(weight64, cov_pos, cov_neg, side, settings, layer_index)
    b, a = exact.quantize_factors(factors.b, factors.a)
    product = exact.init_product(b, a, settings.scale)
    w_res, correction = exact.residual_and_correction(weight, product)
    site = energy_site or SiteCovariances(cov_pos, cov_neg, side)
    diagnostics = layer_diagnostics(weight64, factors, chosen, site, correction, weight)
    return LayerInit(w_res=w_res, a=a.to(torch.float32), b=b.to(torch.float32), correction=correction, diagnostics=diagnostics)


def span_basis(factors: methods.Factors, chosen: subspace.Subspace | None) -> torch.Tensor | None:
    """An orthonormal basis of span(B_init), or None for a zero B."""
    if chosen is not None:
        return chosen.basis
    if not bool(factors.b.any()):
        return None
    return torch.linalg.qr(factors.b, mode="reduced")[0]


def layer_diagnostics(weight64, factors, chosen, site: SiteCovariances, correction, weight) -> dict:
    info = {
        "shape": list(weight.shape),
        "correction_bytes": correction.nbytes,
        "weight_bytes": weight.numel() * weight.element_size(),
        **factors.details,
    }
    basis = span_basis(factors, chosen)
    for label, cov in (("pos", site.pos), ("neg", site.neg)):
        if basis is None or cov is None:
            continue
        captured, total = subspace.energy_parts_at_site(weight64, basis, cov, site.side)
        info[f"energy_{label}"] = captured / total if total > 0 else 0.0
        info[f"captured_{label}"] = captured
        info[f"trace_{label}"] = total
    if chosen is not None:
        info["objective"] = float(chosen.eigenvalues.sum())
        info["eigenvalue_first"] = float(chosen.eigenvalues[0])
        info["eigenvalue_last"] = float(chosen.eigenvalues[-1])
    return info
