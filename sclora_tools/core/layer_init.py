"""One layer's initialisation, end to end and pure: W0 + covariances -> W_res, (A, B), the exact
correction and diagnostics."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from . import exact, methods, subspace


@dataclass(frozen=True)
class InitSettings:
    """method: sclora or lora. beta weighs Cov+ against Cov-. rank r and alpha give PEFT's scale
    s = alpha / r. seed drives random inits (lora)."""

    method: str = "sclora"
    beta: float = 0.5
    rank: int = 128
    alpha: float = 128.0
    seed: int = 0

    @property
    def scale(self) -> float:
        return self.alpha / self.rank


@dataclass
class LayerInit:
    """W_res in the checkpoint dtype, A (r x d_in) and B (d_out x r) in float32 (exactly the
    quantised values), the correction that rebuilds W0, and per-layer diagnostics."""

    w_res: torch.Tensor
    a: torch.Tensor
    b: torch.Tensor
    correction: exact.Correction
    diagnostics: dict = field(default_factory=dict)


def choose_factors(weight64, cov_pos, cov_neg, side, settings: InitSettings, layer_index: int):
    """Factors (float64) and, for subspace methods, the subspace."""
    if settings.method == "sclora":
        chosen = subspace.select_subspace(weight64, cov_pos, cov_neg, side, settings.beta, settings.rank)
        return methods.sclora_factors(weight64, chosen), chosen
    if settings.method == "lora":
        return methods.lora_factors(weight64, settings.rank, settings.seed + layer_index), None
    raise ValueError(f"unknown method {settings.method!r}")


def initialize_layer(
    weight: torch.Tensor,
    cov_pos: torch.Tensor | None,
    cov_neg: torch.Tensor | None,
    side: str,
    settings: InitSettings,
    layer_index: int = 0,
) -> LayerInit:
    weight64 = weight.to(torch.float64)
    factors, chosen = choose_factors(weight64, cov_pos, cov_neg, side, settings, layer_index)
    b, a = exact.quantize_factors(factors.b, factors.a)
    product = exact.init_product(b, a, settings.scale)
    w_res, correction = exact.residual_and_correction(weight, product)
    diagnostics = layer_diagnostics(weight64, chosen, cov_pos, cov_neg, side, settings, correction, weight)
    return LayerInit(w_res=w_res, a=a.to(torch.float32), b=b.to(torch.float32), correction=correction, diagnostics=diagnostics)


def layer_diagnostics(weight64, chosen, cov_pos, cov_neg, side, settings, correction, weight) -> dict:
    info = {
        "shape": list(weight.shape),
        "correction_bytes": correction.nbytes,
        "weight_bytes": weight.numel() * weight.element_size(),
    }
    if chosen is None:
        return info
    for label, cov in (("pos", cov_pos), ("neg", cov_neg)):
        captured, total = subspace.energy_parts_at_site(weight64, chosen.basis, cov, side)
        info[f"energy_{label}"] = captured / total if total > 0 else 0.0
        info[f"captured_{label}"] = captured
        info[f"trace_{label}"] = total
    info["objective"] = float(chosen.eigenvalues.sum())
    info["eigenvalue_first"] = float(chosen.eigenvalues[0])
    info["eigenvalue_last"] = float(chosen.eigenvalues[-1])
    return info
