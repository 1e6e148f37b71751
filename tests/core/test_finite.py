import pytest
import torch

from sclora_tools.core.finite import all_finite

DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("poison", (None, float("nan"), float("inf"), float("-inf"), "both infinities"))
def test_all_finite_answers_as_the_elementwise_check(dtype, poison):
    tensor = torch.randn(37, 19, generator=torch.Generator().manual_seed(0)).to(dtype)
    if poison == "both infinities":
        tensor[3, 4], tensor[30, 1] = float("inf"), float("-inf")
    elif poison is not None:
        tensor[11, 7] = poison
    assert all_finite(tensor) == bool(torch.isfinite(tensor).all())
    assert all_finite(tensor) == (poison is None)


@pytest.mark.parametrize("dtype", DTYPES)
def test_finite_entries_whose_sum_overflows_are_still_finite(dtype):
    largest = torch.finfo(dtype).max
    tensor = torch.full((4, 4), largest, dtype=dtype)
    assert all_finite(tensor)
    assert not bool(torch.isfinite(tensor.sum()))  # the fast path's sum overflows here and is re-checked


def test_empty_and_integer_tensors_are_finite():
    assert all_finite(torch.empty(0, 5))
    assert all_finite(torch.arange(6))
