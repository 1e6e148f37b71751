"""`sclora demo`: the whole pipeline, offline, on the embedded SmolLM2-135M-Instruct with the
bundled datasets: calibrate -> init -> train -> merge -> eval -> push to a local folder.

It starts from the shipped aligned start (the embedded model with the package's safety LoRA merged
in, sclora_tools/aligned.py), which refuses harmful requests where the embedded model does not,
fine-tunes it on summaries with SC-LoRA (D- = the safety set) and, unless `compare` is off, with
vanilla LoRA at the same update norm, and ends with one table: refusal rate, over-refusal and
ROUGE-L of the shipped model, the aligned start, and each fine-tune (comparison.py)."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .. import ui
from ..io.manifest import Manifest
from ..stages.calibrate import calibrate
from ..stages.evaluate import evaluate
from ..stages.init import init
from ..stages.merge import merge
from ..stages.push import push
from ..stages.train import train
from . import comparison


@dataclass(frozen=True)
class DemoSettings:
    """Sizes chosen to keep the demo near 10 minutes on 2 idle CPU cores (README: measured figures).

    model: the start W0 (default: the shipped aligned start; any model argument). baseline: the
    model whose refusal rate the table shows beside it (None: not evaluated). pos/neg:
    calibration sets. samples and max_length: calibration. beta/rank: init. steps, lr,
    batch_size, train_length: training (lr is SC-LoRA's; lora_lr vanilla LoRA's, at the same
    update norm). compare: also fine-tune with vanilla LoRA. eval_samples: rows per evaluation
    set (0 skips every evaluation)."""

    model: str = "smollm2-135m-instruct-aligned"
    baseline: str | None = "smollm2-135m-instruct"
    pos: str = "dialogsum"
    neg: str = "safety"
    samples: int = 64
    max_length: int = 256
    beta: float = 0.9
    rank: int = 32
    steps: int = 20
    lr: float = comparison.SCLORA_MATCHED_LR
    lora_lr: float = comparison.LORA_LR
    compare: bool = True
    batch_size: int = 4
    train_length: int = 320
    eval_samples: int = 24
    repo_id: str = "local/sclora-demo"


def demo(output_dir: str | Path = "sclora-demo", settings: DemoSettings = DemoSettings(), progress: bool = True) -> dict:
    """Run every stage into `output_dir`; returns where, the settings, {stage: seconds} and the key results."""
    root = Path(output_dir)
    root.mkdir(parents=True, exist_ok=True)
    timings, started = {}, time.time()

    def timed(stage, function, *args, **kwargs):
        ui.console.rule(f"[bold]{stage}")
        begin = time.time()
        result = function(*args, **kwargs)
        timings[stage] = round(time.time() - begin, 1)
        return result

    s = settings
    start_rows = timed("start", evaluate_starts, root, s, progress) if s.eval_samples else []
    timed("calibrate", calibrate, s.model, s.pos, s.neg, root / "calib", samples=s.samples, max_length=s.max_length, progress=progress)
    initialised = timed("init", init, root / "calib", root / "run", beta=s.beta, rank=s.rank, progress=progress)
    trained = timed("train", train, root / "run", root / "trained", progress=progress, **training(s, s.lr))
    merged = timed("merge", merge, root / "trained", root / "merged", progress=progress)
    runs = {stage: Manifest.from_dict(manifest) for stage, manifest in (("init", initialised), ("train", trained), ("merge", merged))}
    results = {"output": str(root), "settings": asdict(s), "seconds": timings, "init": runs["init"].raw["summary"],
               "train": runs["train"].raw["summary"], "verification_passed": runs["merge"].verification.passed}
    results.update(evaluate_and_publish(root, s, timed, progress))
    if s.eval_samples:
        lora_row = timed("lora", vanilla_lora, root, s, progress) if s.compare else None
        sclora_row = comparison.row(f"SC-LoRA b={s.beta:g}", comparison.pick(results["metrics"]), s.lr, runs["train"].summary.update_norm)
        results["comparison"] = [*start_rows, *([lora_row] if lora_row else []), sclora_row]
    timings["total"] = round(time.time() - started, 1)
    show_summary(results, runs, root)
    return results


def training(s: DemoSettings, lr: float) -> dict:
    return {"max_steps": s.steps, "lr": lr, "batch_size": s.batch_size, "max_length": s.train_length, "samples": s.steps * s.batch_size}


def evaluate_starts(root: Path, s: DemoSettings, progress: bool) -> list[dict]:
    """The comparison's first rows: the baseline's refusal rate (if any) and the start's metrics."""
    rows = []
    if s.baseline:
        metrics = comparison.evaluate_rows(s.baseline, s.eval_samples, root / "eval-baseline.json", safety_only=True, progress=progress)
        rows.append(comparison.row("shipped model", metrics))
    metrics = comparison.evaluate_rows(s.model, s.eval_samples, root / "eval-start.json", progress=progress)
    return [*rows, comparison.row("start (W0)", metrics)]


def vanilla_lora(root: Path, s: DemoSettings, progress: bool) -> dict:
    """The same fine-tune with vanilla LoRA (same calibration folder, rank, data and steps) at lora_lr."""
    init(root / "calib", root / "lora-run", method="lora", rank=s.rank, progress=progress)
    trained = Manifest.from_dict(train(root / "lora-run", root / "lora-trained", progress=progress, **training(s, s.lora_lr)))
    metrics = comparison.evaluate_rows(root / "lora-trained", s.eval_samples, root / "lora-trained" / "eval.json", progress=progress)
    return comparison.row("LoRA", metrics, s.lora_lr, trained.summary.update_norm)


def evaluate_and_publish(root: Path, s: DemoSettings, timed, progress: bool) -> dict:
    out = {}
    if s.eval_samples:
        report = timed("eval", evaluate, str(root / "merged"), samples=s.eval_samples, progress=progress)
        out["metrics"] = report["metrics"]
    timed("push", push, root / "merged", s.repo_id, to=root / "publish", progress=progress)
    out["published_to"] = str(root / "publish")
    return out


def show_summary(results: dict, runs: dict[str, Manifest], root: Path) -> None:
    rows = [(f"{stage} time", f"{seconds} s") for stage, seconds in results["seconds"].items()]
    init_summary, train_summary = runs["init"].summary, runs["train"].summary
    rows.append(("Cov+ / Cov- energy in subspace", f"{init_summary.energy_pos or 0:.1%} / {init_summary.energy_neg or 0:.1%}"))
    rows.append(("exact-rebuild extra bytes", f"{init_summary.correction_fraction:.2%} of target weights"))
    rows.append(("train loss", f"{train_summary.first_loss:.3f} -> {train_summary.last_loss:.3f}"))
    rows.append(("W0 bit-exact check", "PASSED" if results["verification_passed"] else "FAILED"))
    for name, value in results.get("metrics", {}).items():
        if isinstance(value, (int, float)):
            rows.append((name, f"{value:.3f}"))
    rows.append(("artefacts", str(root)))
    ui.console.print(ui.summary_table("sclora demo", rows))
    if "comparison" in results:
        ui.console.print(comparison.table(results["comparison"]))
