"""Every init method against its mathematical definition, computed independently here (numpy),
and against PEFT's own code where PEFT has the method (PiSSA, OLoRA, CorDA IPA / KPA)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.lora.config import CordaConfig
from peft.tuners.lora.corda import collect_eigens_for_layer, preprocess_corda
from torch import nn

from sclora_tools.core import exact, methods
from sclora_tools.core.layer_init import InitSettings, initialize_layer

F64 = torch.float64


def weight(d_out: int, d_in: int, seed: int) -> torch.Tensor:
    return 0.08 * torch.randn(d_out, d_in, generator=torch.Generator().manual_seed(seed))


def covariance(dim: int, seed: int, tokens: int | None = None) -> torch.Tensor:
    """X^T X / n with a decaying spectrum (a few strong directions, like real activations)."""
    g = torch.Generator().manual_seed(seed)
    n = tokens or 4 * dim
    x = torch.randn(n, dim, generator=g, dtype=F64) * torch.logspace(0, -1.5, dim, dtype=F64)
    x = x @ torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=F64))[0]
    return (x.T @ x / n).float()


def projector(columns: np.ndarray) -> np.ndarray:
    q, _ = np.linalg.qr(columns)
    return q @ q.T


def aligned(ours: torch.Tensor, reference: torch.Tensor, dim: int) -> torch.Tensor:
    """`ours` with each column (dim=1) or row (dim=0) flipped to the sign of `reference`'s."""
    dot = (ours.double() * reference.double()).sum(dim=1 - dim if dim == 1 else 1)
    signs = torch.where(dot < 0, -1.0, 1.0).to(F64)
    return ours.double() * (signs.unsqueeze(0) if dim == 1 else signs.unsqueeze(1))


def close(ours: torch.Tensor, reference: torch.Tensor, rtol: float) -> bool:
    return float((ours.double() - reference.double()).abs().max()) <= rtol * float(reference.double().abs().max())


class OneLayer(nn.Module):
    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.proj = nn.Linear(w.shape[1], w.shape[0], bias=False)
        self.proj.weight.data = w.clone()

    def forward(self, x):
        return self.proj(x)


def peft_layer(w: torch.Tensor, rank: int, alpha: float, init: str, corda: CordaConfig | None = None):
    """PEFT's own initialisation of one linear layer: (B, A, W_res)."""
    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=["proj"], init_lora_weights=init, corda_config=corda)
    model = OneLayer(w)
    if corda is not None:
        preprocess_corda(model, config)
    layer = get_peft_model(model, config).base_model.model.proj
    return layer.lora_B["default"].weight.detach(), layer.lora_A["default"].weight.detach(), layer.base_layer.weight.detach()


# ---------------------------------------------------------------------------- PiSSA / MiLoRA


@pytest.mark.parametrize("shape", [(24, 16), (16, 24)])
@pytest.mark.parametrize("alpha", [6.0, 12.0])
def test_pissa_b_spans_the_top_left_singular_vectors_and_splits_sqrt_s(shape, alpha):
    w, rank = weight(*shape, seed=1), 6
    scale = alpha / rank
    factors = methods.svd_factors(w, rank, scale)
    u, s, vt = np.linalg.svd(w.double().numpy())
    assert np.allclose(projector(factors.b.numpy()), u[:, :rank] @ u[:, :rank].T, atol=1e-10)
    assert np.allclose(scale * factors.b.numpy() @ factors.a.numpy(), u[:, :rank] * s[:rank] @ vt[:rank], atol=1e-10)
    assert np.allclose(np.linalg.norm(factors.b.numpy(), axis=0) ** 2, s[:rank] / scale, rtol=1e-10)  # B = U sqrt(S/s)
    assert np.allclose(np.linalg.norm(factors.a.numpy(), axis=1) ** 2, s[:rank] / scale, rtol=1e-10)  # A = sqrt(S/s) V^T


@pytest.mark.parametrize("alpha", [6.0, 12.0])
def test_pissa_equals_peft_init_lora_weights_pissa_on_the_same_weight(alpha):
    w, rank = weight(24, 16, seed=2), 6
    b, a, w_res = peft_layer(w, rank, alpha, "pissa")
    factors = methods.svd_factors(w, rank, alpha / rank)
    assert close(aligned(factors.b, b, dim=1), b, 1e-5)
    assert close(aligned(factors.a, a, dim=0), a, 1e-5)
    layer = initialize_layer(w, None, None, "input", InitSettings(method="pissa", rank=rank, alpha=alpha))
    assert close(layer.w_res, w_res, 1e-5)


def test_milora_b_spans_the_bottom_left_singular_vectors():
    w, rank = weight(20, 14, seed=3), 5
    factors = methods.svd_factors(w, rank, 1.0, smallest=True)
    u, s, vt = np.linalg.svd(w.double().numpy(), full_matrices=False)
    bottom = slice(s.size - rank, s.size)
    assert np.allclose(projector(factors.b.numpy()), u[:, bottom] @ u[:, bottom].T, atol=1e-10)
    assert np.allclose(factors.b.numpy() @ factors.a.numpy(), u[:, bottom] * s[bottom] @ vt[bottom], atol=1e-10)
    assert np.allclose(np.linalg.norm(factors.b.numpy(), axis=0) ** 2, s[bottom], rtol=1e-10)


# ---------------------------------------------------------------------------- OLoRA


@pytest.mark.parametrize("shape", [(24, 16), (16, 24)])
def test_olora_b_is_the_first_r_columns_of_q_and_a_the_first_r_rows_of_r(shape):
    w, rank = weight(*shape, seed=4), 6
    factors = methods.olora_factors(w, rank)
    q, r = np.linalg.qr(w.double().numpy())
    signs = np.sign(np.sum(factors.b.numpy() * q[:, :rank], axis=0))
    assert np.allclose(factors.b.numpy() * signs, q[:, :rank], atol=1e-12)
    assert np.allclose(factors.a.numpy() * signs[:, None], r[:rank], atol=1e-12)


def test_olora_equals_peft_init_lora_weights_olora():
    w, rank, alpha = weight(24, 16, seed=5), 6, 12.0
    b, a, w_res = peft_layer(w, rank, alpha, "olora")
    factors = methods.olora_factors(w, rank)
    assert close(factors.b, b, 1e-5) and close(factors.a, a, 1e-5)  # same Householder signs, no flip needed
    layer = initialize_layer(w, None, None, "input", InitSettings(method="olora", rank=rank, alpha=alpha))
    assert close(layer.w_res, w_res, 1e-5)


# ---------------------------------------------------------------------------- CorDA


@pytest.mark.parametrize("mode", ["ipa", "kpa"])
@pytest.mark.parametrize("d_in, tokens", [(16, None), (320, 200)])  # the second: a rank-deficient covariance
def test_corda_equals_peft_on_the_same_covariance(mode, d_in, tokens, tmp_path):
    w, rank, alpha = weight(24, d_in, seed=6), 6, 12.0
    cov = covariance(d_in, seed=7, tokens=tokens)
    torch.save({"proj": cov}, tmp_path / "covariance.pt")  # PEFT's own way in: its covariance_file
    corda = CordaConfig(covariance_file=str(tmp_path / "covariance.pt"), corda_method="ipm" if mode == "ipa" else "kpm")
    b, a, w_res = peft_layer(w, rank, alpha, "corda", corda)
    factors = methods.corda_factors(w, cov, rank, alpha / rank, smallest=mode == "kpa")
    assert close(aligned(factors.b, b, dim=1), b, 2e-4)
    assert close(aligned(factors.a, a, dim=0), a, 2e-4)
    cov_pos, cov_neg = (cov, None) if mode == "ipa" else (None, cov)
    layer = initialize_layer(w, cov_pos, cov_neg, "input", InitSettings(method=f"corda-{mode}", rank=rank, alpha=alpha))
    assert close(layer.w_res, w_res, 2e-4)


def test_corda_damping_doubles_exactly_when_peft_does():
    """A symmetric matrix whose damped form is singular at PEFT's first damping (eigenvalues 1 and
    -x with x = 0.01 mean(diag) = 0.01 (1 - x) / 6): PEFT's float32 check rejects it and doubles; so
    must we, and the singular values of W0 C (which depend on the damping) must be PEFT's."""
    x = (0.01 / 6) / (1 + 0.01 / 6)
    q = torch.linalg.qr(torch.randn(6, 6, generator=torch.Generator().manual_seed(20), dtype=F64))[0]
    spectrum = torch.tensor([1.0, -x, 0.3, 0.2, 0.1, 0.05], dtype=F64)
    spectrum[2:] *= 1e-9  # keep the mean of the diagonal at (1 - x) / 6 up to 1e-9
    cov = (q * spectrum) @ q.T
    w = weight(8, 6, seed=21)
    assert methods.corda_damping(cov) == 2 * methods.CORDA_FIRST_DAMPING
    linear = nn.Linear(6, 8, bias=False)
    linear.weight.data, linear.covariance_matrix = w.clone(), cov.float()
    peft_singular = collect_eigens_for_layer(linear, LoraConfig()).S_WC
    ours = methods.corda_factors(w, cov, 6, 1.0)
    assert close(ours.b.norm(dim=0) ** 2, peft_singular, 1e-4)  # |B_k|^2 = S_k / s


def test_corda_definition_w0_c_decomposition():
    """U S V^T = W0 over all components, with W0 C = U S V'^T and V = C^-1 V' (C damped)."""
    w, rank, d_in = weight(12, 10, seed=8), 10, 10
    cov = covariance(d_in, seed=9).double()
    factors = methods.corda_factors(w, cov, rank, 1.0)
    assert np.allclose(factors.b.numpy() @ factors.a.numpy(), w.double().numpy(), atol=1e-10)  # all components: W0
    damped = cov.numpy() + np.eye(d_in) * np.mean(np.diag(cov.numpy())) * factors.details["damping"]
    u, _, _ = np.linalg.svd(w.double().numpy() @ damped, full_matrices=False)
    assert np.allclose(projector(factors.b.numpy()[:, :4]), u[:, :4] @ u[:, :4].T, atol=1e-8)


def test_corda_needs_the_input_side_covariance():
    with pytest.raises(ValueError, match="input-side covariance of the \\+ data"):
        initialize_layer(weight(8, 6, 0), None, None, "input", InitSettings(method="corda-ipa", rank=2, alpha=2.0))
    with pytest.raises(ValueError, match="input-side"):
        initialize_layer(weight(8, 6, 0), covariance(8, 1), covariance(8, 2), "output", InitSettings(method="corda-ipa", rank=2, alpha=2.0))


# ---------------------------------------------------------------------------- LoRA-Null


@pytest.mark.parametrize("alpha", [4.0, 8.0])
def test_lora_null_adapter_annihilates_the_principal_subspace_of_the_neg_input_covariance(alpha):
    w, rank, d_in = weight(20, 16, seed=10), 4, 16
    cov = covariance(d_in, seed=11).double()
    scale = alpha / rank
    factors = methods.lora_null_factors(w, cov, rank, scale)
    values, vectors = np.linalg.eigh(cov.numpy())  # ascending
    null, principal = vectors[:, :rank], vectors[:, rank:]
    a = factors.a.numpy()
    assert np.abs(a @ principal).max() <= 1e-10 * np.abs(a).max()  # A x = 0 on the principal subspace
    target = w.double().numpy() @ null @ null.T  # W0 U U^T
    assert np.allclose(scale * factors.b.numpy() @ a, target, atol=1e-12)
    # the reference implementation's recipe: top-r SVD of W0 U U^T, sqrt(S) to each factor
    u, s, _ = np.linalg.svd(target)
    assert np.allclose(np.linalg.norm(factors.b.numpy(), axis=0) ** 2, s[:rank] / scale, rtol=1e-9)
    assert np.allclose(projector(factors.b.numpy()), u[:, :rank] @ u[:, :rank].T, atol=1e-9)
    details = factors.details
    assert details["null_eigenvalue_inside"] == pytest.approx(values[rank - 1], rel=1e-9)
    assert details["null_eigenvalue_outside"] == pytest.approx(values[rank], rel=1e-9)
    assert details["null_gap_ratio"] == pytest.approx(values[rank] / values[rank - 1], rel=1e-9)
    assert details["null_energy_share"] == pytest.approx(values[:rank].sum() / values.sum(), rel=1e-9)
    assert details["null_space_unique"]


def test_lora_null_records_a_non_unique_null_space_when_neg_data_is_scarce():
    cov = covariance(16, seed=12, tokens=6)  # rank 6: a 10-dim exact null space
    factors = methods.lora_null_factors(weight(20, 16, seed=13), cov, 4, 1.0)
    assert factors.details["null_gap_ratio"] is None and not factors.details["null_space_unique"]
    assert factors.details["null_energy_share"] < 1e-9


# ---------------------------------------------------------------------------- every method, one layer


@pytest.mark.parametrize("method", list(methods.METHODS))
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_every_method_gives_w_res_plus_s_ba_equal_to_w0_and_an_exact_rebuild(method, dtype):
    w = weight(24, 16, seed=14).to(dtype)
    cov_pos, cov_neg = covariance(16, seed=15), covariance(16, seed=16)
    settings = InitSettings(method=method, rank=6, alpha=9.0, beta=0.7)
    layer = initialize_layer(w, cov_pos, cov_neg, "input", settings, layer_index=1)
    approx = layer.w_res.double() + settings.scale * (layer.b.double() @ layer.a.double())
    assert bool(((approx - w.double()).abs() <= 2.5 * exact.spacing(layer.w_res)).all())
    product = exact.init_product(layer.b.double(), layer.a.double(), settings.scale)
    assert torch.equal(exact.bit_view(exact.rebuild(layer.w_res, product, layer.correction)), exact.bit_view(w))
    assert (methods.METHODS[method].name == "lora") == (not bool(layer.b.any()))


def test_registry_declares_what_each_method_reads():
    assert methods.METHODS["sclora"].site == "subspace" and methods.METHODS["sclora"].uses_beta
    assert {m for m, spec in methods.METHODS.items() if spec.site == "input"} == {"corda-ipa", "corda-kpa", "lora-null"}
    assert methods.METHODS["corda-ipa"].roles == ("pos",) and methods.METHODS["lora-null"].roles == ("neg",)
    assert all(methods.METHODS[m].site is None for m in ("lora", "pissa", "milora", "olora"))
