import pytest
import torch

from sclora_tools.calibration.sink import finished
from sclora_tools.errors import NumericalError


def test_a_covariance_with_nan_or_inf_is_refused_with_its_site():
    for poison in (float("nan"), float("inf")):
        total = torch.eye(4, dtype=torch.float64)
        total[1, 2] = poison
        with pytest.raises(NumericalError, match="model.layers.0.mlp.down_proj:input"):
            finished(total, 10, 2, "token", "model.layers.0.mlp.down_proj:input")


def test_finite_entries_whose_sum_overflows_are_kept():
    total = torch.full((3, 3), torch.finfo(torch.float64).max, dtype=torch.float64)
    assert torch.equal(finished(total, 1, 1, "token", "site"), total)
