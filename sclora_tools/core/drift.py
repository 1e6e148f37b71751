"""How far training moved the adapter out of the SC-LoRA subspace S = span(B_init).

Pure tensor maths. For each layer with B_init != 0:
  weight update   dW = s (B A - B_init A_init)
  outside part    (I - P_S) dW, with P_S the orthogonal projector onto span(B_init)
and the share of B's own change that left S: |(I - P_S)(B - B_init)|^2 / |B - B_init|^2.
With B frozen at Q_r both are zero (up to rounding).

None of it forms a d_out x d_in matrix: with dB = B - B_init and dA = A - A_init,
  B A - B_init A_init = dB A + B_init dA, and ||X Y||_F^2 = tr(X^T X Y Y^T),
so every norm is a trace of r x r products, O((d_out + d_in) r^2) per layer instead of
O(d_out d_in r): cheap enough to track during training.
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
    """dW = s (B A - B_init A_init), in float64 (the definition; the norms below avoid forming it)."""
    return scale * (b.double() @ a.double() - b_init.double() @ a_init.double())


def trace_of_products(x: torch.Tensor, y: torch.Tensor) -> float:
    """tr(x y) for two r x r matrices, without forming x y."""
    return float((x * y.T).sum())


def update_sq(b_init, a_init, b, a, scale: float) -> float:
    """|s (B A - B_init A_init)|_F^2 from r x r products (module docstring)."""
    b0, a64 = b_init.double(), a.double()
    delta_b, delta_a = b.double() - b0, a64 - a_init.double()
    a_gram = a64 @ a64.T
    total = trace_of_products(delta_b.T @ delta_b, a_gram) + 2 * trace_of_products(delta_b.T @ b0, delta_a @ a64.T) \
        + trace_of_products(b0.T @ b0, delta_a @ delta_a.T)
    return scale**2 * max(total, 0.0)


def layer_drift(b_init, a_init, b, a, scale: float) -> dict[str, float]:
    """Squared norms of the weight update and of B's change, in total and outside S."""
    q = orthonormal_basis(b_init)
    b64, a64 = b.double(), a.double()
    outside_b = outside(q, b64)  # (I - P_S) B_init = 0, so this is (I - P_S) delta_B
    return {
        "update_sq": update_sq(b_init, a_init, b, a, scale),
        "update_outside_sq": scale**2 * trace_of_products(outside_b.T @ outside_b, a64 @ a64.T),
        "b_change_sq": float((b64 - b_init.double()).square().sum()),
        "b_change_outside_sq": float(outside_b.square().sum()),
    }


def update_norm(pairs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]], scale: float) -> float:
    """Frobenius norm of the whole weight update, sqrt(sum over layers |s (B A - B_init A_init)|^2),
    for (b_init, a_init, b, a) per layer: the step size that equal learning rates do not equalise."""
    return sum(update_sq(*pair, scale) for pair in pairs) ** 0.5


def drift_summary(layers: list[dict[str, float]]) -> dict[str, float]:
    """Energy-weighted fractions over all layers (0 when nothing moved)."""
    total = {key: sum(layer[key] for layer in layers) for key in layers[0]} if layers else {}

    def share(part: str, whole: str) -> float:
        return total[part] / total[whole] if total.get(whole, 0.0) > 0 else 0.0

    return {"update_outside_fraction": share("update_outside_sq", "update_sq"),
            "b_change_outside_fraction": share("b_change_outside_sq", "b_change_sq")}
