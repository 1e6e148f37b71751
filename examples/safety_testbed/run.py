"""python examples/safety_testbed/run.py [--seeds 0 1 2] [--steps 60] [--lr 5e-4] [--out runs/testbed]

A miniature of the paper's Table 2 on real weights (CPU, SmolLM2-135M-Instruct):
  1. align the model (align.py: full fine-tune on the bundled safety + benign sets; cached);
  2. calibrate it once: D+ = dialogsum (benign summaries), D- = safety;
  3. fine-tune on dialogsum with vanilla LoRA and with SC-LoRA at several betas (unlocked and
     with --freeze-b), equal steps, batch and learning rate, for each seed;
  4. evaluate each on the held-out sets: refusal rate (>= 100 harmful requests), over-refusal,
     ROUGE on held-out summaries, mean NLL of reference refusals and of benign answers.
Writes results.json, results.md (mean +- spread over seeds) and frontier.png into --out.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from align import DEFAULT_OUT, align  # noqa: E402

from sclora_tools import calibrate, evaluate, init, train  # noqa: E402

CONFIGS = [
    {"name": "LoRA", "method": "lora", "beta": 0.0, "freeze_b": False},
    {"name": "SC-LoRA b=0.5", "method": "sclora", "beta": 0.5, "freeze_b": False},
    {"name": "SC-LoRA b=0.9", "method": "sclora", "beta": 0.9, "freeze_b": False},
    {"name": "SC-LoRA b=0.99", "method": "sclora", "beta": 0.99, "freeze_b": False},
    {"name": "SC-LoRA b=0.9 locked", "method": "sclora", "beta": 0.9, "freeze_b": True},
    {"name": "SC-LoRA b=0.99 locked", "method": "sclora", "beta": 0.99, "freeze_b": True},
]
METRICS = ("refusal_rate", "over_refusal_rate", "rougeL", "refusal_nll", "benign_nll")


def run_one(config: dict, seed: int, calib: Path, out: Path, args) -> dict:
    tag = f"{config['name'].replace(' ', '_').replace('=', '')}-s{seed}"
    started = time.time()
    init(calib, out / tag / "run", method=config["method"], beta=config["beta"], rank=args.rank, seed=seed, progress=False)
    train(out / tag / "run", out / tag / "trained", max_steps=args.steps, lr=args.lr, batch_size=args.batch_size,
          max_length=args.max_length, seed=seed, freeze_b=config["freeze_b"], progress=False)
    report = evaluate(out / tag / "trained", knowledge=None, output=out / tag / "eval.json",
                      progress=False, **eval_sizes(args))
    return {"config": config["name"], "seed": seed, "seconds": round(time.time() - started, 1),
            **{m: report["metrics"].get(m) for m in METRICS}}


def eval_sizes(args) -> dict:
    """Every evaluation uses the same first rows of each held-out set (>= 100 harmful requests)."""
    return {"batch_size": 16, "samples": args.eval_samples}


def table(rows: list[dict], reference: dict) -> str:
    lines = ["| model | refusal rate | over-refusal | ROUGE-L | refusal NLL | benign NLL | seeds | time/run |",
             "|---|---|---|---|---|---|---|---|"]
    lines.append("| aligned (before fine-tuning) | " + " | ".join(fmt([reference.get(m)]) for m in METRICS) + " | - | - |")
    for name in dict.fromkeys(r["config"] for r in rows):
        group = [r for r in rows if r["config"] == name]
        cells = [fmt([r[m] for r in group]) for m in METRICS]
        seconds = statistics.mean(r["seconds"] for r in group)
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {len(group)} | {seconds:.0f} s |")
    return "\n".join(lines)


def fmt(values: list) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} +- {statistics.stdev(values):.3f}"


def plot(rows: list[dict], reference: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4.5))
    for name in dict.fromkeys(r["config"] for r in rows):
        group = [r for r in rows if r["config"] == name]
        x = statistics.mean(r["rougeL"] for r in group)
        y = statistics.mean(r["refusal_rate"] for r in group)
        axis.scatter(x, y, label=name, marker="s" if "locked" in name else "o")
    axis.axhline(reference["refusal_rate"], linestyle="--", color="grey", label="aligned, before fine-tuning")
    axis.set_xlabel("utility: ROUGE-L on held-out summaries")
    axis.set_ylabel("safety: refusal rate on held-out harmful requests")
    axis.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("runs/testbed"))
    parser.add_argument("--aligned", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--rank", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--max-length", type=int, default=320)
    parser.add_argument("--configs", nargs="+", default=[c["name"] for c in CONFIGS])
    parser.add_argument("--eval-samples", type=int, default=100, help="rows per held-out set (>= 100 harmful requests)")
    parser.add_argument("--align-epochs", type=float, default=1.0)
    parser.add_argument("--align-lr", type=float, default=1e-4)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    aligned = align(args.aligned, epochs=args.align_epochs, lr=args.align_lr, batch_size=8, max_length=160, seed=0)
    reference_path = args.out / "aligned_eval.json"
    if reference_path.is_file():
        reference = json.loads(reference_path.read_text())["metrics"]
    else:
        reference = evaluate(aligned, knowledge=None, output=reference_path, progress=False, **eval_sizes(args))["metrics"]
    calib = args.out / "calib"
    if not (calib / "manifest.json").is_file():
        calibrate(str(aligned), "dialogsum", "safety", calib, samples=128, max_length=256, progress=False)
    results_path = args.out / "results.json"
    rows = json.loads(results_path.read_text()) if results_path.is_file() else []
    done = {(r["config"], r["seed"]) for r in rows}
    for config in [c for c in CONFIGS if c["name"] in args.configs]:
        for seed in args.seeds:
            if (config["name"], seed) not in done:
                rows.append(run_one(config, seed, calib, args.out, args))
                results_path.write_text(json.dumps(rows, indent=2) + "\n")
                print(json.dumps(rows[-1]))
    markdown = table(rows, reference)
    (args.out / "results.md").write_text(f"Command: `python {shlex.join(sys.argv)}`\n\n{markdown}\n")
    plot(rows, reference, args.out / "frontier.png")
    print(markdown)


if __name__ == "__main__":
    main()
