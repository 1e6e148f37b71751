"""The sweep's per-beta eigen work at wide shapes: the solver init uses (certified block Krylov
where r << d, else the certified mixed-precision eigh) against a float64 eigh for every beta,
side by side in one run.

    python bench/sweep_solver.py [--shapes 2048x16,4096x64] [--betas 0,0.25,0.5,0.75,0.9,0.95,0.99,1]

One synthetic input-side site per shape (a random d x d weight, Cov+ and Cov- with power-law
spectra like calibration covariances), prepared once (core.sweep.prepare_site), then solved for
every beta both ways (at beta = 1 both are dense: Krylov is not tried there). Prints the seconds, the speed-up and the largest relative difference in
the objective R(S) (the Krylov answer's R(S) is certified within 1e-7 relative of the dense one's).
"""

from __future__ import annotations

import argparse
import time

import torch
from common import machine, table

from sclora_tools.core import eigen, mixed_eigen, sweep
from sclora_tools.stages.sweep import DEFAULT_BETAS

KRYLOV_MIN_DIM, MIXED_MIN_DIM = eigen.KRYLOV_MIN_DIM, mixed_eigen.MIXED_MIN_DIM


def decaying(dim: int, seed: int, scale: float) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=torch.float64))[0]
    return (basis * (scale / torch.arange(1, dim + 1, dtype=torch.float64) ** 1.5)) @ basis.T


def timed(site, betas: list[float], rank: int, krylov: bool) -> tuple[float, list[float]]:
    eigen.KRYLOV_MIN_DIM = KRYLOV_MIN_DIM if krylov else 10**9
    mixed_eigen.MIXED_MIN_DIM = MIXED_MIN_DIM if krylov else 10**9  # the baseline: a float64 eigh every time
    started = time.perf_counter()
    points = sweep.sweep_site(site, betas, rank)
    return time.perf_counter() - started, [p.objective for p in points]


def measure(dim: int, rank: int, betas: list[float]) -> tuple:
    generator = torch.Generator().manual_seed(1)
    weight = torch.randn(dim, dim, generator=generator, dtype=torch.float64) / dim**0.5
    site = sweep.prepare_site(weight, decaying(dim, 2, 30.0), decaying(dim, 3, 20.0), "input")
    fast, fast_objectives = timed(site, betas, rank, krylov=True)
    dense, dense_objectives = timed(site, betas, rank, krylov=False)
    worst = max(abs(a - b) / abs(b) for a, b in zip(fast_objectives, dense_objectives, strict=True))
    return f"{dim} x rank {rank}", f"{dense:.2f}", f"{fast:.2f}", f"{dense / fast:.1f}x", f"{worst:.1e}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="2048x16,4096x64")
    parser.add_argument("--betas", default=",".join(f"{b:g}" for b in DEFAULT_BETAS), help="default: the sweep's own")
    args = parser.parse_args()
    betas = [float(b) for b in args.betas.split(",")]
    rows = [measure(*map(int, shape.split("x")), betas) for shape in args.shapes.split(",")]
    print(table(rows, ("site", "dense eigh s", "dispatched s", "speed-up", "max rel. R(S) diff")))
    print(f"{len(betas)} betas per site; {machine()}")


if __name__ == "__main__":
    main()
