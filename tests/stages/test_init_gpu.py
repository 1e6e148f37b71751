"""On a machine with CUDA, init solves SC-LoRA's eigenproblems on the GPU: the same subspaces as
on the CPU, and merge still rebuilds W0 bit for bit (the exact scheme stays on the CPU)."""

from __future__ import annotations

import pytest
import torch

from sclora_tools import init, merge
from sclora_tools.io.adapter import read_adapter
from tests.stages.conftest import SMALL_CALIBRATION

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def test_init_on_a_gpu_matches_the_cpu_and_merges_exactly(tiny_chain, tmp_path, monkeypatch):
    calibration = tiny_chain("bf16", calibrate=SMALL_CALIBRATION).calib
    init(calibration, tmp_path / "gpu", beta=0.5, rank=4, progress=False)
    with monkeypatch.context() as patch:
        patch.setattr(torch.cuda, "is_available", lambda: False)
        init(calibration, tmp_path / "cpu", beta=0.5, rank=4, progress=False)
    _, on_gpu = read_adapter(tmp_path / "gpu" / "adapter")
    _, on_cpu = read_adapter(tmp_path / "cpu" / "adapter")
    for module, pair in on_gpu.items():
        q, _ = torch.linalg.qr(on_cpu[module].b.double())
        b = pair.b.double()
        assert float((b - q @ (q.T @ b)).norm()) <= 1e-5 * float(b.norm()), module
    assert merge(tmp_path / "gpu", rebuild_base=tmp_path / "base", progress=False)["verification"]["passed"]
