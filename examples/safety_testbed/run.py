"""python examples/safety_testbed/run.py [--out runs/testbed] [--seeds 0 1 2] [--configs NAME ...] [--lrs LR ...] [--jobs 2]

A miniature of the paper's Table 2 on real weights (CPU, SmolLM2-135M-Instruct):
  1. align the model (align.py: full fine-tune on the bundled safety + benign sets; cached);
  2. calibrate it once: D+ = dialogsum (benign summaries), D- = safety;
  3. fine-tune on dialogsum with vanilla LoRA and with SC-LoRA at several betas (unlocked and
     with --freeze-b), equal steps, batch and learning rate, for each seed: the whole grid at a
     high learning rate (where fine-tuning erodes refusals), a subset at a moderate one;
  4. evaluate each on the held-out sets: refusal rate (>= 100 harmful requests), over-refusal,
     ROUGE on held-out summaries, mean NLL of reference refusals and of benign answers.
Equal learning rates are not equal step sizes, so every row also reports the Frobenius norm of
its whole weight update, |dW|_F, to compare methods at matched update norms.
Writes results.json, results.md (mean +- stdev over seeds) and frontier.png into --out; a re-run
resumes where it stopped. --jobs runs that many fine-tunes at once, splitting the CPU threads.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import shlex
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch

from sclora_tools import calibrate, evaluate, init, train

sys.path.insert(0, str(Path(__file__).parent))

from align import align, default_out  # noqa: E402

HIGH_LR = 2e-3
# (name, method, beta, freeze_b, learning rates). Adam's update norm |dW|_F grows in proportion to
# the learning rate, and at equal rates SC-LoRA's is ~9x LoRA's (A starts at Q^T W0). So each
# method runs at the rate that gives LoRA's |dW|_F at HIGH_LR (~14; rates from measured norms),
# and the configurations where equal rates matter also run at HIGH_LR itself.
CONFIGS = [
    ("LoRA", "lora", 0.0, False, (HIGH_LR,)),
    ("SC-LoRA b=0.9", "sclora", 0.9, False, (2.2e-4, HIGH_LR)),
    ("SC-LoRA b=0.99", "sclora", 0.99, False, (5.5e-4,)),
    ("SC-LoRA b=0.9 locked", "sclora", 0.9, True, (1.3e-3, HIGH_LR)),
]
METRICS = ("refusal_rate", "over_refusal_rate", "rougeL", "refusal_nll", "benign_nll")
COLUMNS = ("refusal rate", "over-refusal", "ROUGE-L", "refusal NLL", "benign NLL")


def init_dir(out: Path, method: str, beta: float, seed: int) -> Path:
    """SC-LoRA's init does not depend on the seed and is shared by the locked and unlocked runs;
    LoRA's random A does, so it gets one init per seed."""
    return out / "inits" / (f"lora-s{seed}" if method == "lora" else f"sclora-b{beta}")


def make_inits(jobs: list[dict], calib: Path, out: Path, rank: int) -> None:
    for job in jobs:
        target = Path(job["init"])
        if not (target / "manifest.json").is_file():
            init(calib, target, method=job["method"], beta=job["beta"], rank=rank, seed=job["seed"], progress=False)


def run_one(job: dict) -> dict:
    """Fine-tune one (config, lr, seed) from its init and evaluate it; runs in a worker process."""
    torch.set_num_threads(job["threads"])
    run = Path(job["dir"])
    started = time.time()
    trained = train(Path(job["init"]), run / "trained", max_steps=job["steps"], lr=job["lr"], batch_size=job["batch_size"],
                    max_length=job["max_length"], seed=job["seed"], freeze_b=job["freeze_b"], progress=False)
    shutil.rmtree(run / "trained" / "checkpoints", ignore_errors=True)
    trained_at = time.time()
    report = evaluate(run / "trained", knowledge=None, output=run / "eval.json", progress=False, **job["eval"])
    summary = trained["summary"]
    return {"config": job["name"], "lr": job["lr"], "seed": job["seed"],
            "train_seconds": round(trained_at - started, 1), "eval_seconds": round(time.time() - trained_at, 1),
            "update_norm": summary["update_norm"],
            "update_outside_fraction": summary["subspace"].get("update_outside_fraction"),
            **{m: report["metrics"].get(m) for m in METRICS}}


def plan(args, out: Path) -> list[dict]:
    """Seed by seed, so that a grid cut short still has every configuration at the seeds it reached."""
    threads = max(1, (os.cpu_count() or 1) // args.jobs)
    jobs = []
    for seed in args.seeds:
        for name, method, beta, freeze_b, lr in arms(args):
            tag = f"{name.replace(' ', '_').replace('=', '')}-lr{lr:g}-s{seed}"
            jobs.append({"name": name, "method": method, "beta": beta, "freeze_b": freeze_b, "lr": lr, "seed": seed,
                         "dir": str(out / tag), "init": str(init_dir(out, method, beta, seed)), "threads": threads,
                         "steps": args.steps, "batch_size": args.batch_size, "max_length": args.max_length,
                         "eval": eval_sizes(args)})
    return jobs


def arms(args) -> list[tuple]:
    """(name, method, beta, freeze_b, lr) for every chosen configuration and each of its rates."""
    return [(name, method, beta, freeze_b, lr) for name, method, beta, freeze_b, rates in CONFIGS if name in args.configs
            for lr in rates if args.lrs is None or lr in args.lrs]


def eval_sizes(args) -> dict:
    """Every evaluation uses the same first rows of each held-out set (>= 100 harmful requests)."""
    return {"batch_size": 16, "samples": args.eval_samples}


def settings_of(args, alignment: dict) -> dict:
    return {"alignment": alignment, "steps": args.steps, "rank": args.rank, "batch_size": args.batch_size,
            "max_length": args.max_length, "eval_samples": args.eval_samples}


def load_results(path: Path, settings: dict) -> list[dict]:
    if not path.is_file():
        return []
    saved = json.loads(path.read_text())
    if saved["settings"] != settings:
        sys.exit(f"{path} was made with other settings or another aligned model; pass a new --out to start afresh.")
    return saved["rows"]


def run_grid(jobs: list[dict], rows: list[dict], path: Path, settings: dict, workers: int) -> list[dict]:
    def record(row: dict) -> None:
        rows.append(row)
        path.write_text(json.dumps({"settings": settings, "rows": rows}, indent=2) + "\n")
        print(json.dumps(row), flush=True)

    if workers == 1:
        for job in jobs:
            record(run_one(job))
        return rows
    with multiprocessing.get_context("spawn").Pool(workers, maxtasksperchild=1) as pool:
        for row in pool.imap_unordered(run_one, jobs):
            record(row)
    return rows


def table(rows: list[dict], reference: dict) -> str:
    lines = ["| model | lr | " + " | ".join(COLUMNS) + " | update norm | update outside S | seeds | time/run |",
             "|---|---|" + "---|" * (len(COLUMNS) + 4)]
    lines.append("| aligned (before fine-tuning) | - | " + " | ".join(fmt([reference.get(m)]) for m in METRICS) + " | - | - | - | - |")
    for name, lr in groups(rows):
        group = [r for r in rows if (r["config"], r["lr"]) == (name, lr)]
        cells = [fmt([r[m] for r in group]) for m in (*METRICS, "update_norm", "update_outside_fraction")]
        seconds = statistics.mean(r["train_seconds"] + r["eval_seconds"] for r in group)
        lines.append(f"| {name} | {lr:g} | " + " | ".join(cells) + f" | {len(group)} | {seconds:.0f} s |")
    return "\n".join(lines)


def groups(rows: list[dict]) -> list[tuple[str, float]]:
    order = [c[0] for c in CONFIGS]
    return sorted(dict.fromkeys((r["config"], r["lr"]) for r in rows), key=lambda g: (order.index(g[0]), g[1]))


def fmt(values: list) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} +- {statistics.stdev(values):.3f}"


def plot(rows: list[dict], reference: dict, path: Path) -> None:
    import matplotlib  # noqa: PLC0415 - optional: only the plot needs it, and the package does not depend on it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415 - after choosing the Agg backend

    figure, axis = plt.subplots(figsize=(7, 5))
    for index, (name, lr) in enumerate(groups(rows)):
        group = [r for r in rows if (r["config"], r["lr"]) == (name, lr)]
        x, y = [r["rougeL"] for r in group], [r["refusal_rate"] for r in group]
        norm = statistics.mean(r["update_norm"] for r in group)
        axis.errorbar(statistics.mean(x), statistics.mean(y), xerr=spread(x), yerr=spread(y), capsize=3, color=f"C{index}",
                      fmt="s" if "locked" in name else "o", label=f"{name}, lr {lr:g} (|dW| {norm:.0f})")
    axis.axhline(reference["refusal_rate"], linestyle="--", color="grey", label="aligned, before fine-tuning")
    axis.set_xlabel("utility: ROUGE-L on held-out summaries")
    axis.set_ylabel("safety: refusal rate on held-out harmful requests")
    axis.set_ylim(-0.05, 1.05)
    axis.legend(fontsize=7, loc="lower left")
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def spread(values: list[float]) -> float:
    return statistics.stdev(values) if len(values) > 1 else 0.0


def reference_eval(aligned: Path, out: Path, args) -> dict:
    path = out / "aligned_eval.json"
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved["model"]["path"] != str(aligned):
            sys.exit(f"{path} evaluated {saved['model']['path']}, not {aligned}; pass a new --out to start afresh.")
        return saved["metrics"]
    return evaluate(aligned, knowledge=None, output=path, progress=False, **eval_sizes(args))["metrics"]


def calibration(aligned: Path, out: Path) -> Path:
    calib = out / "calib"
    if not (calib / "manifest.json").is_file():
        calibrate(str(aligned), "dialogsum", "safety", calib, samples=128, max_length=256, progress=False)
    return calib


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/testbed"))
    parser.add_argument("--aligned", type=Path, help="default: the cache path align.py uses for --align-lr/--align-epochs")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--lrs", type=float, nargs="+", help="run only these of the grid's learning rates")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=320)
    parser.add_argument("--configs", nargs="+", default=[c[0] for c in CONFIGS], choices=[c[0] for c in CONFIGS])
    parser.add_argument("--eval-samples", type=int, default=100, help="rows per held-out set (>= 100 harmful requests)")
    parser.add_argument("--align-epochs", type=float, default=3.0)
    parser.add_argument("--align-lr", type=float, default=1e-4)
    parser.add_argument("--jobs", type=int, default=1, help="fine-tunes run at once (each gets cpu_count/jobs threads)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    aligned = align(args.aligned or default_out(args.align_epochs, args.align_lr), epochs=args.align_epochs, lr=args.align_lr, batch_size=8,
                    max_length=160, seed=0)
    settings = settings_of(args, json.loads((aligned / "alignment.json").read_text()))
    results_path = args.out / "results.json"
    rows = load_results(results_path, settings)
    reference = reference_eval(aligned, args.out, args)
    calib = calibration(aligned, args.out)
    done = {(r["config"], r["lr"], r["seed"]) for r in rows}
    jobs = [j for j in plan(args, args.out) if (j["name"], j["lr"], j["seed"]) not in done]
    make_inits(jobs, calib, args.out, args.rank)
    rows = run_grid(jobs, rows, results_path, settings, args.jobs)
    markdown = table(rows, reference)
    (args.out / "results.md").write_text(f"Command: `python {shlex.join(sys.argv)}`\n\n{markdown}\n")
    plot(rows, reference, args.out / "frontier.png")
    print(markdown)


if __name__ == "__main__":
    main()
