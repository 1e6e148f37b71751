"""`sclora sweep` against running `sclora init` once per beta, side by side in one run.

    python bench/sweep_vs_init.py [--model smollm2-135m-instruct] [--samples 32] [--rank 16]
                                  [--betas 0,0.25,0.5,0.75,0.9,0.95,0.99,1] [--targets q_proj,...]

Calibrates once, then times (1) `init` for every beta (what a user without the sweep runs to
compare betas: each reads the checkpoint, solves every layer and writes a full init folder) and
(2) one `sweep` over the same betas. Prints both, the speed-up, and the largest difference
between the energy shares the sweep predicts and the ones each init measured (the same answer).

Run it alone. On a machine with more busy processes than cores, OpenMP threads that spin-wait
make LAPACK's eigh up to 100x slower (both sides alike); OMP_WAIT_POLICY=PASSIVE avoids that, but
on an idle machine it made this bench 2.6x slower here, so it is not set.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("SCLORA_QUIET", "1")

import torch  # noqa: E402

from sclora_tools import calibrate, init, sweep  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--pos", default="dialogsum")
    parser.add_argument("--neg", default="safety")
    parser.add_argument("--samples", type=int, default=32)
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--betas", default="0,0.25,0.5,0.75,0.9,0.95,0.99,1")
    parser.add_argument("--targets", default=None, help="comma-separated short names; default: every linear layer")
    args = parser.parse_args()
    betas = [float(b) for b in args.betas.split(",")]
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(scratch)
        targets = args.targets.split(",") if args.targets else None
        calibrate(args.model, args.pos, args.neg, root / "calib", samples=args.samples, max_length=256, targets=targets, progress=False)
        per_beta, measured = [], {}
        for beta in betas:
            started = time.perf_counter()
            manifest = init(root / "calib", root / "init", beta=beta, rank=args.rank, progress=False)
            per_beta.append(time.perf_counter() - started)
            measured[beta] = {name: (layer["energy_pos"], layer["energy_neg"]) for name, layer in manifest["layers"].items()}
        started = time.perf_counter()
        swept = sweep(root / "calib", betas=betas, rank=args.rank, progress=False)
        sweep_seconds = time.perf_counter() - started

    gap = max(abs(swept["layers"][name][key][i] - measured[beta][name][j])
              for i, beta in enumerate(swept["config"]["betas"]) for name in measured[beta]
              for j, key in enumerate(("energy_pos", "energy_neg")))
    layers = len(swept["layers"])
    print(f"model {args.model}, {layers} layers, rank {args.rank}, {len(betas)} betas, torch threads {torch.get_num_threads()}")
    print(f"init once per beta : {sum(per_beta):8.1f} s  ({sum(per_beta) / len(betas):.1f} s per beta)")
    print(f"sweep, all betas   : {sweep_seconds:8.1f} s  ({sweep_seconds / len(betas):.1f} s per beta)")
    print(f"speed-up           : {sum(per_beta) / sweep_seconds:8.1f}x")
    print(f"largest |energy share difference| sweep vs init: {gap:.2e}")


if __name__ == "__main__":
    main()
