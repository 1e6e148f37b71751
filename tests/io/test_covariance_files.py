"""The covariance files: one writer that streams covariances in any order into a valid
safetensors file, one reader that returns float64 symmetric matrices whatever the storage,
including older artefacts that hold full float64 matrices without any storage metadata."""

from __future__ import annotations

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from sclora_tools.core.covariance_codec import FORMATS, stored_bytes
from sclora_tools.io.covariances import CovarianceWriter, covariance_path, open_covariances, write_covariances
from sclora_tools.io.manifest_types import Role


def covariances() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    out = {}
    for key, dim in (("model.layers.0.self_attn.q_proj:input", 24), ("model.layers.0.mlp.down_proj:output", 16)):
        x = torch.randn(200, dim, generator=generator, dtype=torch.float64)
        out[key] = x.T @ x / 200
    return out


@pytest.mark.parametrize("form", FORMATS)
def test_any_form_reads_back_as_float64_symmetric_matrices(form, tmp_path):
    expected = covariances()
    write_covariances(tmp_path, Role.NEG, expected, form)
    with open_covariances(tmp_path, Role.NEG) as stored:
        assert stored.form == form and sorted(stored.keys()) == sorted(expected)
        for key, matrix in expected.items():
            got = stored.get(key)
            assert got.dtype == torch.float64 and torch.equal(got, got.T)
            torch.testing.assert_close(got, matrix, rtol=0, atol=2e-5 * matrix.abs().max().item())
    data_bytes = sum(stored_bytes(m.shape[0], form) for m in expected.values())
    assert data_bytes <= covariance_path(tmp_path, Role.NEG).stat().st_size <= data_bytes + 2048


def test_the_writer_takes_covariances_in_any_order_and_writes_a_valid_file(tmp_path):
    expected = covariances()
    writer = CovarianceWriter(tmp_path / "x.safetensors", {k: v.shape[0] for k, v in expected.items()}, "corr24")
    for key in reversed(list(expected)):
        writer.write(key, expected[key])
    writer.close()
    with safe_open(tmp_path / "x.safetensors", "pt") as handle:  # the safetensors library itself accepts it
        assert handle.metadata()["sclora_storage"] == "corr24"
        assert {name.split("@")[0] for name in handle.keys()} == set(expected)


def test_closing_with_a_covariance_missing_is_an_error(tmp_path):
    expected = covariances()
    writer = CovarianceWriter(tmp_path / "x.safetensors", {k: v.shape[0] for k, v in expected.items()}, "float32")
    writer.write(next(iter(expected)), next(iter(expected.values())))
    with pytest.raises(RuntimeError, match="never written"):
        writer.close()


def test_a_wrong_shape_is_refused(tmp_path):
    writer = CovarianceWriter(tmp_path / "x.safetensors", {"a:input": 4}, "float32")
    with pytest.raises(ValueError, match="expected 4"):
        writer.write("a:input", torch.eye(5, dtype=torch.float64))
    writer.abandon()


def test_older_artefacts_with_full_float64_matrices_still_read(tmp_path):
    expected = covariances()
    save_file(expected, str(covariance_path(tmp_path, Role.POS)), metadata={"format": "pt"})  # the format before storage forms
    with open_covariances(tmp_path, Role.POS) as stored:
        assert stored.form == "float64" and set(stored.keys()) == set(expected)
        for key, matrix in expected.items():
            assert torch.equal(stored.get(key), matrix)
