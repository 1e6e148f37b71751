"""`sclora demo`: the whole pipeline, offline, on the embedded SmolLM2-135M-Instruct with the
bundled datasets: calibrate -> init -> train -> merge -> eval -> push to a local folder."""

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


@dataclass(frozen=True)
class DemoSettings:
    """Sizes chosen so the demo ends in well under 15 minutes on 2 CPU cores.

    model: embedded short name or any model argument. pos/neg: calibration sets. samples and
    max_length: calibration. beta/rank: init. steps, lr, batch_size, train_length: training.
    eval_samples: rows per evaluation set (0 skips eval)."""

    model: str = "smollm2-135m-instruct"
    pos: str = "dialogsum"
    neg: str = "safety"
    samples: int = 64
    max_length: int = 256
    beta: float = 0.9
    rank: int = 32
    steps: int = 20
    lr: float = 2e-4
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
    timed("calibrate", calibrate, s.model, s.pos, s.neg, root / "calib", samples=s.samples, max_length=s.max_length, progress=progress)
    initialised = timed("init", init, root / "calib", root / "run", beta=s.beta, rank=s.rank, progress=progress)
    trained = timed("train", train, root / "run", root / "trained", max_steps=s.steps, lr=s.lr, batch_size=s.batch_size,
                    max_length=s.train_length, samples=s.steps * s.batch_size, progress=progress)
    merged = timed("merge", merge, root / "trained", root / "merged", progress=progress)
    runs = {stage: Manifest.from_dict(manifest) for stage, manifest in (("init", initialised), ("train", trained), ("merge", merged))}
    results = {"output": str(root), "settings": asdict(s), "seconds": timings, "init": runs["init"].raw["summary"],
               "train": runs["train"].raw["summary"], "verification_passed": runs["merge"].verification.passed}
    results.update(evaluate_and_publish(root, s, timed, progress))
    timings["total"] = round(time.time() - started, 1)
    show_summary(results, runs, root)
    return results


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
