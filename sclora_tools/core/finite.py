"""Finiteness checks at the cost of one reduction. Tensors in, booleans out."""

from __future__ import annotations

import torch


def all_finite(tensor: torch.Tensor) -> bool:
    """Whether no entry is NaN or +-Inf; the same answer as `torch.isfinite(tensor).all()`.

    A sum is NaN or Inf whenever an entry is, so a finite sum proves every entry finite, at the
    cost of one reduction in the tensor's own dtype: no copy and no boolean tensor of its size.
    Finite entries can overflow the sum (a float16 tensor past 65504, say), so a non-finite sum
    is confirmed entry by entry.
    """
    if not tensor.is_floating_point() or tensor.numel() == 0:
        return True
    if bool(torch.isfinite(tensor.sum())):
        return True
    return bool(torch.isfinite(tensor).all())
