"""`sclora init` against the naive method, with the subspaces checked (issue 13, item 3).

    python bench/naive_init.py [--quick] [--models embedded,wide] [--rank-embedded 16] [--rank-wide 64]

One calibration per model (24 + 24 samples of 128 tokens, dialogsum vs safety), then in fresh
processes, one at a time:
  naive   per target module its output covariances Cov+- = W Cov_in W^T (or the collected output
          ones), then a full float64 eigh of dCov (d_out x d_out), top r; the rest of init as is
          (exact scheme, residual write, adapter, diagnostics);
  branch  init as shipped: shared input sites, the d_in-sized problem where d_out > d_in, the
          certified block Krylov solver where r << d.
Then, per target layer, R(S) = tr(Q^T dCov_out Q) of both adapters' B (orthonormalised) and the
largest relative difference (target: within 1e-6), and the time ratio (target: >= 3x).
Models: "embedded" SmolLM2-135M (fp32, rank 16), "wide" a random Llama (hidden 2048, intermediate
5632, 4 layers, bf16, rank 64). --quick: a tiny random model, seconds.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from common import WIDE_LLAMA, build_llama, calibrate_once, embedded_model, machine, run_python, table

NAIVE = """
import time, torch
from sclora_tools.core import subspace

def naive(weight, cov_pos, cov_neg, side, beta, rank):
    if side == "input":
        cov_pos, cov_neg = subspace.output_covariance(weight, cov_pos), subspace.output_covariance(weight, cov_neg)
    values, vectors = torch.linalg.eigh(subspace.symmetrize(subspace.delta_covariance(cov_pos, cov_neg, beta)))
    order = torch.argsort(values, descending=True)[:rank]
    return subspace.Subspace(basis=subspace.fix_signs(vectors[:, order]), eigenvalues=values[order], solver="naive")

subspace.select_subspace = naive
from sclora_tools import init
started = time.perf_counter()
init({calibration!r}, {out!r}, rank={rank}, progress=False)
print("SECONDS", time.perf_counter() - started)
"""

BRANCH = """
import time
from sclora_tools import init
started = time.perf_counter()
init({calibration!r}, {out!r}, rank={rank}, progress=False)
print("SECONDS", time.perf_counter() - started)
"""

REWARDS = """
import json, torch
from sclora_tools.core import subspace
from sclora_tools.io.adapter import read_adapter
from sclora_tools.io.checkpoint import CheckpointReader
from sclora_tools.io.covariances import open_covariances
from sclora_tools.io.manifest import load_manifest
from sclora_tools.io.manifest_types import Role

calibration = load_manifest({calibration!r}, "calibration")
reader = CheckpointReader(calibration.model.path)
_, naive = read_adapter({naive!r} + "/adapter")
_, branch = read_adapter({branch!r} + "/adapter")
worst, rows = 0.0, []
with open_covariances({calibration!r}, Role.POS) as pos, open_covariances({calibration!r}, Role.NEG) as neg:
    for target, site in calibration.config.site_of_target().items():
        weight = reader.read(target + ".weight").double()
        inner = subspace.delta_covariance(pos.get(site.key), neg.get(site.key), 0.5)
        def reward(b):
            q = torch.linalg.qr(b.double())[0]
            v = weight.T @ q if site.side == "input" else q
            return float(torch.trace(v.T @ inner @ v))
        ours, theirs = reward(branch[target].b), reward(naive[target].b)
        worst = max(worst, abs(ours - theirs) / abs(theirs))
print("WORST", worst)
"""


def measure(name: str, work: Path, rank: int, samples: int, length: int) -> dict:
    model = embedded_model() if name == "embedded" else build_llama(
        work / f"model-{name}", **(WIDE_LLAMA if name == "wide" else {"hidden": 64, "intermediate": 172, "layers": 2, "heads": 4, "kv_heads": 2}),
        dtype="float32" if name == "quick" else "bfloat16")
    calibration = calibrate_once(model, work / f"calib-{name}", samples, length)
    fields = {"calibration": str(calibration), "rank": rank}
    naive = run_python(NAIVE.format(out=str(work / f"naive-{name}"), **fields))
    branch = run_python(BRANCH.format(out=str(work / f"branch-{name}"), **fields))
    check = run_python(REWARDS.format(calibration=str(calibration), naive=str(work / f"naive-{name}"), branch=str(work / f"branch-{name}")))
    targets = len(json.loads((calibration / "manifest.json").read_text())["config"]["targets"])
    return {"model": name, "rank": rank, "targets": targets, "naive": float(naive.value("SECONDS")),
            "branch": float(branch.value("SECONDS")), "worst": float(check.value("WORST"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a tiny random Llama, 4 + 4 samples of 32 tokens: a smoke run")
    parser.add_argument("--models", default="embedded,wide")
    parser.add_argument("--rank-embedded", type=int, default=16)
    parser.add_argument("--rank-wide", type=int, default=64)
    parser.add_argument("--samples", type=int, default=24)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--work", type=Path, help="keep models and calibrations here between runs")
    args = parser.parse_args()
    ranks = {"embedded": args.rank_embedded, "wide": args.rank_wide, "quick": 4}
    names = ["quick"] if args.quick else args.models.split(",")
    samples, length = (4, 32) if args.quick else (args.samples, args.max_length)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        rows = [measure(name, work, ranks[name], samples, length) for name in names]
    lines = [(r["model"], r["rank"], r["targets"], f"{r['naive']:.1f}", f"{r['branch']:.1f}", f"{r['naive'] / r['branch']:.2f}x",
              f"{r['worst']:.1e}") for r in rows]
    print(table(lines, ("model", "rank", "targets", "naive init s", "branch init s", "naive / branch", "max rel. R(S) diff")))
    print(f"targets: >= 3x faster, R(S) within 1e-6 relative; {machine()}")


if __name__ == "__main__":
    main()
