"""python examples/safety_testbed/run.py [--out runs/testbed] [--seeds 0 1 2] [--configs NAME ...] [--jobs 2] [--table-only]

A miniature of the paper's Table 2 on real weights (CPU, SmolLM2-135M-Instruct):
  1. align the model (align.py: full fine-tune on the bundled safety + benign sets; cached);
  2. calibrate it once: D+ = dialogsum (benign summaries), D- = safety, with the input-side
     covariances the CorDA and LoRA-Null rows need (`--for`);
  3. a first pass measures the learning rate of every row whose rate is not known yet (the rate
     that gives LoRA's update norm; examples/testbed_common/grid.py);
  4. fine-tune on dialogsum with every configuration below, for each seed, and evaluate each on
     the held-out sets: refusal rate (>= 100 harmful requests), over-refusal, ROUGE on held-out
     summaries, mean NLL of reference refusals and of benign answers.
Writes results.json, rates.json, results.md (mean +- stdev over seeds, rows not run yet marked)
and frontier.png into --out; a re-run resumes where it stopped. --table-only re-renders
results.md from --out without running anything.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sclora_tools import calibrate, evaluate
from sclora_tools.io.manifest import load_manifest

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))

from align import align, default_out  # noqa: E402
from testbed_common.cli import chosen, grid_arguments, rate_rule, saved_grid, write_tables  # noqa: E402
from testbed_common.grid import Config, RateRule, Store, Training, run_grid  # noqa: E402
from testbed_common.report import Column  # noqa: E402

HIGH_LR = 2e-3
RULE = RateRule(reference="LoRA", lr=HIGH_LR, probe_lr=HIGH_LR)
# Numeric rates below HIGH_LR were matched to LoRA's |dW|_F at HIGH_LR by an earlier first pass
# (2026-11-23, seed 0: LoRA 13.9; SC-LoRA b=0.9 126 at 2e-3); MATCHED rows are measured by this one.
CONFIGS = [
    Config("LoRA", "lora", rates=(HIGH_LR,)),
    Config("SC-LoRA b=0.5", "sclora", 0.5),
    Config("SC-LoRA b=0.9", "sclora", 0.9, rates=(2.2e-4, HIGH_LR)),
    Config("SC-LoRA b=0.99", "sclora", 0.99, rates=(5.5e-4,)),
    Config("SC-LoRA b=0.9 locked", "sclora", 0.9, rates=(1.3e-3, HIGH_LR), freeze_b=True),
    Config("SC-LoRA b=0.99 locked", "sclora", 0.99, freeze_b=True),
    Config("PiSSA", "pissa"),
    Config("CorDA IPA", "corda-ipa"),
    Config("CorDA KPA", "corda-kpa"),
    Config("LoRA-Null", "lora-null"),
    Config("LoRA-Null frozen A", "lora-null", freeze_a=True),
]
COLUMNS = (Column("refusal_rate", "refusal rate"), Column("over_refusal_rate", "over-refusal"), Column("rougeL", "ROUGE-L"),
           Column("refusal_nll", "refusal NLL"), Column("benign_nll", "benign NLL"))
BEFORE = "aligned (before fine-tuning)"
CALIBRATION_SAMPLES = 128


def evaluate_run(trained: Path, run: Path, eval_args: dict) -> dict:
    """The held-out metrics of one fine-tuned run (a grid worker calls this)."""
    report = evaluate(trained, knowledge=None, output=run / "eval.json", progress=False, **eval_args)
    return {c.key: report["metrics"].get(c.key) for c in COLUMNS}


def eval_arguments(args) -> dict:
    """Every evaluation uses the same first rows of each held-out set (>= 100 harmful requests)."""
    return {"batch_size": 16, "samples": args.eval_samples}


def settings_of(args, alignment: dict) -> dict:
    """What a grid's rows depend on. The alignment's wall time is not: a re-made alignment with the
    same recipe must not orphan the rows already run."""
    recipe = {key: value for key, value in alignment.items() if key != "seconds"}
    return {"alignment": recipe, "steps": args.steps, "rank": args.rank, "batch_size": args.batch_size,
            "max_length": args.max_length, "eval_samples": args.eval_samples}


def reference_eval(aligned: Path, out: Path, args) -> dict:
    path = out / "aligned_eval.json"
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved["model"]["path"] != str(aligned):
            sys.exit(f"{path} evaluated {saved['model']['path']}, not {aligned}; pass a new --out to start afresh.")
        return saved["metrics"]
    return evaluate(aligned, knowledge=None, output=path, progress=False, **eval_arguments(args))["metrics"]


def calibration(aligned: Path, out: Path, methods: list[str]) -> Path:
    """One calibration serves every row: the layer-output covariances (SC-LoRA) and, for CorDA and
    LoRA-Null, the input-side ones."""
    calib = out / "calib"
    if not (calib / "manifest.json").is_file():
        calibrate(str(aligned), "dialogsum", "safety", calib, samples=CALIBRATION_SAMPLES, max_length=256, for_methods=methods, progress=False)
    served = set(load_manifest(calib, "calibration").config.for_methods)
    if not set(methods) - {"lora", "pissa"} <= served:
        sys.exit(f"{calib} was calibrated for {sorted(served)} only; move it away (the finished runs do not depend on it) "
                 f"and re-run to calibrate for {methods}.")
    return calib


def plot(rows: list[dict], reference: dict, path: Path) -> None:
    from testbed_common.frontier import SAFETY, plot_frontier  # noqa: PLC0415 - optional: only the plot needs matplotlib

    plot_frontier(rows, reference, path, [c.name for c in CONFIGS], SAFETY)


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    grid_arguments(parser, CONFIGS, "runs/testbed")
    parser.add_argument("--aligned", type=Path, help="default: the cache path align.py uses for --align-lr/--align-epochs")
    parser.add_argument("--max-length", type=int, default=320)
    parser.add_argument("--eval-samples", type=int, default=100, help="rows per held-out set (>= 100 harmful requests)")
    parser.add_argument("--align-epochs", type=float, default=3.0)
    parser.add_argument("--align-lr", type=float, default=1e-4)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    rule = rate_rule(RULE, args)
    if args.table_only:
        store, rates, reference = saved_grid(args.out, CONFIGS, rule, "aligned_eval.json")
    else:
        args.out.mkdir(parents=True, exist_ok=True)
        aligned = align(args.aligned or default_out(args.align_epochs, args.align_lr), epochs=args.align_epochs, lr=args.align_lr,
                        batch_size=8, max_length=160, seed=0)
        store = Store(args.out, settings_of(args, json.loads((aligned / "alignment.json").read_text())))
        reference = reference_eval(aligned, args.out, args)
        calib = calibration(aligned, args.out, sorted({c.method for c in CONFIGS}))
        training = Training(args.steps, args.rank, args.batch_size, args.max_length)
        rates = run_grid(store, chosen(CONFIGS, args), CONFIGS, rule, args, calib, training, evaluate_run, eval_arguments(args))
    print(write_tables(args.out, store, CONFIGS, rates, reference, BEFORE, COLUMNS, rule, len(args.seeds)))
    if store.rows:
        plot(store.rows, reference, args.out / "frontier.png")


if __name__ == "__main__":
    main()
