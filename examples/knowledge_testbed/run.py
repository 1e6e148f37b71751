"""python examples/knowledge_testbed/run.py [--out runs/knowledge] [--seeds 0 1 2] [--configs NAME ...] [--jobs 2] [--table-only]

A miniature of the paper's Table 1 on real weights (CPU, SmolLM2-135M-Instruct as shipped):
  1. split the bundled knowledge QA set by question (split.py): rows for calibration (D-) and
     rows for evaluation, which never overlap;
  2. calibrate the model once: D+ = the bundled `math` word problems, D- = the knowledge
     calibration rows, with the input-side covariances CorDA KPA and LoRA-Null need (`--for`);
  3. a first pass measures the learning rate of every method (the rate that gives LoRA's update
     norm; examples/testbed_common/grid.py);
  4. fine-tune on `math` with LoRA, PiSSA, CorDA KPA, LoRA-Null and SC-LoRA at two betas, for each
     seed, and evaluate each: math accuracy (exact match of the final number, math_task.py) on
     held-out problems, knowledge exact match on the evaluation rows, and the mean NLL of the
     reference solutions and answers (smooth metrics that move before exact match does).
Writes results.json, rates.json, results.md (mean +- stdev over seeds, rows not run yet
marked) and frontier.png (knowledge EM against math accuracy) into --out; a re-run resumes where
it stopped. --table-only re-renders results.md and the plot.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sclora_tools import calibrate, models, ui
from sclora_tools.evaluation.generation import Runner, generate_set, reference_nll
from sclora_tools.evaluation.scoring import score_knowledge
from sclora_tools.evaluation.sets import load_set
from sclora_tools.stages.evaluate import load_for_eval, locate_target

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[1]))

from math_task import accuracy  # noqa: E402
from split import write_split  # noqa: E402
from testbed_common.cli import chosen, grid_arguments, rate_rule, saved_grid, write_tables  # noqa: E402
from testbed_common.grid import Config, RateRule, Store, Training, run_grid  # noqa: E402
from testbed_common.report import Column  # noqa: E402

MODEL = "smollm2-135m-instruct"
KNOWLEDGE_FILE = Path(__file__).resolve().parents[2] / "sclora_tools" / "datasets" / "knowledge_qa.jsonl"
LORA_LR = 2e-3
RULE = RateRule(reference="LoRA", lr=LORA_LR, probe_lr=LORA_LR)
CONFIGS = [
    Config("LoRA", "lora", rates=(LORA_LR,)),
    Config("PiSSA", "pissa"),
    Config("CorDA KPA", "corda-kpa"),
    Config("LoRA-Null", "lora-null"),
    Config("SC-LoRA b=0.5", "sclora", 0.5),
    Config("SC-LoRA b=0.8", "sclora", 0.8),
]
COLUMNS = (Column("math_accuracy", "math accuracy"), Column("math_nll", "math NLL"),
           Column("knowledge_em", "knowledge EM"), Column("knowledge_nll", "knowledge NLL"))
BEFORE = f"{MODEL} (before fine-tuning)"
MATH_TOKENS, KNOWLEDGE_TOKENS = 64, 24


def measure(model: Path, output: Path, eval_args: dict) -> dict:
    """Math accuracy and knowledge EM (with both reference NLLs) of a model or an sclora run."""
    device = models.pick_device("auto")
    lm, tokenizer = load_for_eval(locate_target(str(model), None), device)
    math_set = load_set("utility", "math-heldout", tokenizer, eval_args["math_samples"], 0)
    knowledge_set = load_set("knowledge", eval_args["knowledge"], tokenizer, None, 0)
    with ui.progress_bar(False) as bar:
        runner = Runner(lm, tokenizer, device, eval_args["batch_size"], bar)
        solutions = generate_set(runner, math_set, MATH_TOKENS)
        knowledge = score_knowledge(runner, knowledge_set, KNOWLEDGE_TOKENS)
        metrics = {"math_accuracy": accuracy(solutions, [row["answer"] for row in math_set.loaded.rows]),
                   "math_nll": reference_nll(runner, math_set), "knowledge_em": knowledge.metrics["knowledge_em"],
                   "knowledge_nll": reference_nll(runner, knowledge_set)}
    examples = {"math": [{"question": q, "generation": g} for q, g in zip(math_set.questions[:5], solutions[:5], strict=False)],
                "knowledge": knowledge.examples}
    output.write_text(json.dumps({"model": str(model), "metrics": metrics, "examples": examples}, indent=2) + "\n")
    return metrics


def evaluate_run(trained: Path, run: Path, eval_args: dict) -> dict:
    """The held-out metrics of one fine-tuned run (a grid worker calls this)."""
    return measure(trained, run / "eval.json", eval_args)


def eval_arguments(args, knowledge_eval: Path) -> dict:
    return {"batch_size": 16, "math_samples": args.math_samples, "knowledge": str(knowledge_eval)}


def settings_of(args, model: models.ModelSource, calibration_rows: Path) -> dict:
    return {"model": MODEL, "revision": model.revision, "steps": args.steps, "rank": args.rank, "batch_size": args.batch_size,
            "max_length": args.max_length, "math_samples": args.math_samples, "calibration_samples": args.calibration_samples,
            "knowledge_calibration_rows": sum(1 for _ in calibration_rows.open())}


def reference_eval(model: Path, out: Path, eval_args: dict) -> dict:
    path = out / "base_eval.json"
    if path.is_file():
        return json.loads(path.read_text())["metrics"]
    return measure(model, path, eval_args)


def calibration(model: Path, knowledge_rows: Path, out: Path, samples: int) -> Path:
    calib = out / "calib"
    if not (calib / "manifest.json").is_file():
        calibrate(str(model), "math", str(knowledge_rows), calib, samples=samples, max_length=256,
                  for_methods=sorted({c.method for c in CONFIGS}), progress=False)
    return calib


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    grid_arguments(parser, CONFIGS, "runs/knowledge")
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--math-samples", type=int, default=100, help="held-out word problems per evaluation")
    parser.add_argument("--calibration-samples", type=int, default=128,
                        help="samples per side (D- has fewer knowledge rows: all of them are used)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    rule = rate_rule(RULE, args)
    if args.table_only:
        store, rates, reference = saved_grid(args.out, CONFIGS, rule, "base_eval.json")
    else:
        source = models.resolve_model(MODEL)
        calibration_rows, evaluation_rows = write_split([json.loads(line) for line in KNOWLEDGE_FILE.open()], args.out / "data")
        store = Store(args.out, settings_of(args, source, calibration_rows))
        eval_args = eval_arguments(args, evaluation_rows)
        reference = reference_eval(source.path, args.out, eval_args)
        calib = calibration(source.path, calibration_rows, args.out, args.calibration_samples)
        training = Training(args.steps, args.rank, args.batch_size, args.max_length)
        rates = run_grid(store, chosen(CONFIGS, args), CONFIGS, rule, args, calib, training, evaluate_run, eval_args)
    print(write_tables(args.out, store, CONFIGS, rates, reference, BEFORE, COLUMNS, rule, len(args.seeds)))
    if store.rows:
        plot(store.rows, reference, args.out / "frontier.png")


def plot(rows: list[dict], reference: dict, path: Path) -> None:
    from testbed_common.frontier import KNOWLEDGE, plot_frontier  # noqa: PLC0415 - optional: only the plot needs matplotlib

    plot_frontier(rows, reference, path, [c.name for c in CONFIGS], KNOWLEDGE)


if __name__ == "__main__":
    main()
