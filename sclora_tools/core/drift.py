"""How far training moved the adapter out of the SC-LoRA subspace S = span(B_init).

Pure tensor maths. For each layer with B_init != 0:
  weight update   dW = s (B A - B_init A_init)
  outside part    (I - P_S) dW, with P_S the orthogonal projector onto span(B_init)
and the share of B's own change that left S: |(I - P_S)(B - B_init)|^2 / |B - B_init|^2.
With B frozen at Q_r both are zero (up to rounding).
"""

from __future__ import annotations

import torch


def orthonormal_basis(b_init: torch.Tensor) -> torch.Tensor:
    q, _ = torch.linalg.qr(b_init.double(), mode="reduced")
    return q


def outside(q: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """(I - Q Q^T) M."""
    return matrix - q @ (q.T @ matrix)


def weight_update(b_init, a_init, b, a, scale: float) -> torch.Tensor:
    """dW = s (B A - B_init A_init), in float64."""
    return scale * (b.double() @ a.double() - b_init.double() @ a_init.double())


def layer_drift(b_init, a_init, b, a, scale: float) -> dict[str, float]:
    """Squared norms of the weight update and of B's change, in total and outside S."""
    q = orthonormal_basis(b_init)
    b64, a64 = b.double(), a.double()
    delta_b = b64 - b_init.double()
    outside_b = outside(q, b64)  # (I - P_S) B_init = 0, so this is (I - P_S) delta_B
    update = weight_update(b_init, a_init, b64, a64, scale)
    return {
        "update_sq": float(update.square().sum()),
        "update_outside_sq": float((scale * outside_b @ a64).square().sum()),
        "b_change_sq": float(delta_b.square().sum()),
        "b_change_outside_sq": float(outside_b.square().sum()),
    }


def update_norm(pairs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]], scale: float) -> float:
    """Frobenius norm of the whole weight update, sqrt(sum over layers |s (B A - B_init A_init)|^2),
    for (b_init, a_init, b, a) per layer: the step size that equal learning rates do not equalise."""
    return sum(float(weight_update(*pair, scale).square().sum()) for pair in pairs) ** 0.5


def drift_summary(layers: list[dict[str, float]]) -> dict[str, float]:
    """Energy-weighted fractions over all layers (0 when nothing moved)."""
    total = {key: sum(layer[key] for layer in layers) for key in layers[0]} if layers else {}

    def share(part: str, whole: str) -> float:
        return total[part] / total[whole] if total.get(whole, 0.0) > 0 else 0.0

    return {"update_outside_fraction": share("update_outside_sq", "update_sq"),
            "b_change_outside_fraction": share("b_change_outside_sq", "b_change_sq")}
