"""The dense eigen route of `sclora init`: the certified mixed-precision solver (a float32 eigh,
massive directions deflated first, refined and certified in float64) against a float64 eigh, on
the very matrices init solves densely, side by side in one process. It measures the solver from
512 dimensions; init takes it from mixed_eigen.MIXED_MIN_DIM (2,048), where it paid here.

    python bench/mixed_eigh.py [--work DIR] [--models embedded,wide] [--ranks 16,64] [--betas 0.5,0.9]
                               [--synthetic 4096x256] [--threads 1]

SmolLM2-135M and a random Llama of hidden 2048 (init_floor's "wide") are calibrated once each
(24 + 24 samples of 128 tokens, dialogsum vs safety; kept in --work). For every model, rank and
beta, each problem of >= 512 dimensions init solves densely is formed once
(dCov of q_proj / o_proj / down_proj, W dCov W^T where the site is the input, and gate/up's
reduced L^T dCov L) and solved both ways, alternating; --synthetic adds a matrix of Llama-2-7B's
width with a power-law spectrum and one massive direction (a rank init cannot give to Krylov).
A row with no matrices: all of them are Krylov's there. Prints the seconds both ways,
the speed-up, how many the mixed solver certified (the rest fall back to the float64 eigh, and
their float32 try is counted in its time) and the largest relative difference in R(S), the sum
of the top r eigenvalues. One thread by default: init runs two layers at a time, each on one of
these 2 cores.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch
from common import WIDE_LLAMA, build_llama, calibrate_once, embedded_model, machine, table
from safetensors import safe_open

from sclora_tools.core import eigen, mixed_eigen, subspace
from sclora_tools.io.covariances import open_covariances
from sclora_tools.io.manifest import load_manifest
from sclora_tools.io.manifest_types import Role

SMALLEST = 512  # measured from here, to show where it pays (init takes it from mixed_eigen.MIXED_MIN_DIM)


def prepared(name: str, work: Path) -> tuple[Path, Path]:
    """(model, calibration) of "embedded" or "wide", built and calibrated once into `work`."""
    model = embedded_model() if name == "embedded" else build_llama(work / "model-wide", **WIDE_LLAMA, dtype="bfloat16")
    return model, calibrate_once(model, work / f"calib-{name}")


def weights(model: Path) -> dict[str, torch.Tensor]:
    found = {}
    for path in sorted(model.glob("*.safetensors")):
        with safe_open(str(path), framework="pt") as handle:
            found.update({name: handle.get_tensor(name) for name in handle.keys() if name.endswith("proj.weight")})
    return found


def dense_problems(calib: Path, model: Path, beta: float, rank: int) -> list[torch.Tensor]:
    """Every matrix init's dense route solves at this beta and rank (where Krylov does not pay)."""
    sites, tensors, problems = load_manifest(calib, "calibration").config.site_of_target(), weights(model), []
    per_block = subspace.krylov_dims_per_block(beta)
    with open_covariances(calib, Role.POS) as pos, open_covariances(calib, Role.NEG) as neg:
        for target, site in sites.items():
            weight = tensors[f"{target}.weight"].to(torch.float64)
            inner = subspace.delta_covariance(pos.get(site.key), neg.get(site.key), beta)
            matrix = formed(weight, inner, site.side, rank)
            krylov = per_block and eigen.worth_krylov(eigen.DenseOperator(matrix), rank, per_block)
            if matrix.shape[0] >= SMALLEST and not krylov:
                problems.append(matrix)
    return problems


def formed(weight: torch.Tensor, inner: torch.Tensor, side: str, rank: int) -> torch.Tensor:
    if side == "output":
        return eigen.symmetrize(inner)
    if weight.shape[0] > weight.shape[1]:
        return subspace.reduced_kernel(subspace.gram_factor(weight), inner)
    return eigen.symmetrize(subspace.output_covariance(weight, inner))


def synthetic(dim: int, device: str = "cpu") -> torch.Tensor:
    """A dCov-like spectrum: + and - power-law halves and one massive direction (-1e4)."""
    generator = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(dim, dim, generator=generator, dtype=torch.float64).to(device))[0]
    index = torch.arange(1, dim // 2 + 1, dtype=torch.float64, device=device)
    values = torch.cat([torch.tensor([-1e4], dtype=torch.float64, device=device), 30.0 / index, -20.0 / index[: dim - dim // 2 - 1]])
    return (basis * values) @ basis.T


def compare(problems: list[torch.Tensor], rank: int) -> tuple:
    if not problems:
        return ("-",) * 5  # all of them Krylov's
    dense_s = mixed_s = worst = 0.0
    certified = 0
    for matrix in problems:
        started = time.perf_counter()
        reference = eigen.dense_top(matrix, rank)
        dense_s += time.perf_counter() - started
        started = time.perf_counter()
        found = mixed_eigen.mixed_top(matrix, rank)
        chosen = found or eigen.dense_top(matrix, rank)
        mixed_s += time.perf_counter() - started
        certified += found is not None
        best = float(reference.values.sum())
        worst = max(worst, abs(best - float(chosen.values.sum())) / abs(best))
    return f"{dense_s:.2f}", f"{mixed_s:.2f}", f"{dense_s / mixed_s:.2f}x", f"{certified} / {len(problems)}", f"{worst:.1e}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, help="keep the models and calibrations here between runs")
    parser.add_argument("--models", default="embedded,wide")
    parser.add_argument("--ranks", default="16,64")
    parser.add_argument("--betas", default="0.5,0.9")
    parser.add_argument("--synthetic", default="4096x256", help="DIMxRANK, or '' for none")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        for name in args.models.split(","):
            model, calib = prepared(name, work)
            for rank in map(int, args.ranks.split(",")):
                for beta in map(float, args.betas.split(",")):
                    problems = dense_problems(calib, model, beta, rank)
                    rows.append((f"{name}, rank {rank}, beta {beta:g}", len(problems), *compare(problems, rank)))
    if args.synthetic:
        dim, rank = map(int, args.synthetic.split("x"))
        rows.append((f"synthetic {dim}, rank {rank}, one massive direction", 1, *compare([synthetic(dim)], rank)))
    print(table(rows, ("problems", "matrices", "float64 eigh s", "mixed s", "speed-up", "certified", "max rel. R(S) diff")))
    print(f"{args.threads} thread(s); {machine()}")


if __name__ == "__main__":
    main()
