"""sclora_tools.core.drift: the size of the whole weight update."""

from __future__ import annotations

import pytest
import torch

from sclora_tools.core.drift import update_norm


def test_update_norm_is_the_frobenius_norm_of_the_whole_weight_update():
    generator = torch.Generator().manual_seed(3)
    b0, a0 = torch.randn(12, 4, generator=generator), torch.randn(4, 9, generator=generator)
    b, a = b0 + 0.1 * torch.randn(12, 4, generator=generator), a0 + 0.1 * torch.randn(4, 9, generator=generator)
    lora_b, lora_a = torch.randn(7, 2, generator=generator), torch.randn(2, 5, generator=generator)
    pairs = [(b0, a0, b, a), (torch.zeros(7, 2), lora_a, lora_b, lora_a)]
    expected = torch.cat([(2.0 * (b.double() @ a.double() - b0.double() @ a0.double())).flatten(),
                          (2.0 * lora_b.double() @ lora_a.double()).flatten()]).norm()
    assert update_norm(pairs, 2.0) == pytest.approx(float(expected), rel=1e-12)
    assert update_norm([(b0, a0, b0, a0)], 2.0) == 0.0
