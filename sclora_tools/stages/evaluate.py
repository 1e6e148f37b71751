"""`sclora eval`: what a model kept and what it learned, on held-out sets.

Loads the model (or run) once, runs every chosen set through it (sclora_tools.evaluation: the
sets, generation and NLL, and each set's metrics, listed there), optionally asks an LLM judge
(io/judge.py), and writes one report. MODEL may be a model directory, an embedded short name,
a Hub id, or an sclora run: a `merge` output (its merged/ model), an `init` or `train` output
(residual + that adapter through PEFT); for a run the result goes to RUN/eval.json.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import __version__, models, ui
from ..errors import InputError, UsageError
from ..evaluation.generation import NLL_MAX_LENGTH, Runner
from ..evaluation.scoring import ROUGE_TYPES, SCORERS, add_judge_scores, timed
from ..evaluation.sets import load_set
from ..io.atomic import MANIFEST, write_json
from ..io.judge import JudgeConfig, judge_settings
from ..io.manifest import init_run_dir, load_manifest, verify_files

SCHEMA_VERSION = 1
EVAL_FILE = "eval.json"
SETS = ("safety", "benign", "utility", "knowledge")
DEFAULT_NEW_TOKENS = {"safety": 64, "benign": 64, "utility": 64, "knowledge": 24}


@dataclass(frozen=True)
class Target:
    """What to load: a model directory, optionally with a PEFT adapter, and where a run keeps eval.json."""

    model_dir: Path
    adapter_dir: Path | None
    default_output: Path | None
    record: dict


def evaluate(
    model: str | Path,
    *,
    safety: str | None = "safety-heldout",
    benign: str | None = "benign-heldout",
    utility: str | None = "dialogsum-heldout",
    knowledge: str | None = "knowledge",
    samples: int | None = None,
    max_new_tokens: int | None = None,
    batch_size: int = 8,
    adapter: str | Path | None = None,
    output: str | Path | None = None,
    judge: bool = False,
    seed: int = 0,
    device: str = "auto",
    progress: bool = True,
) -> dict:
    """Evaluate a model or an sclora run on the held-out sets; returns (and writes) the result dict.

    Pass None or "none" for a set to skip it; `samples` rows per set (None: all), chosen with `seed`."""
    started = time.time()
    chosen = chosen_sets({"safety": safety, "benign": benign, "utility": utility, "knowledge": knowledge})
    budgets = token_budgets(max_new_tokens)
    check_options(samples, batch_size, judge, chosen)
    judge_config = judge_settings() if judge else None
    target = locate_target(str(model), adapter)
    runner_device = models.pick_device(device)
    lm, tokenizer = load_for_eval(target, runner_device)
    sets = {role: load_set(role, name, tokenizer, samples, seed) for role, name in chosen.items()}
    with ui.progress_bar(progress) as bar:
        runner = Runner(lm, tokenizer, runner_device, batch_size, bar)
        outcomes = {role: timed(SCORERS[role], runner, sets[role], budgets[role]) for role in sets}
        if judge_config is not None:
            add_judge_scores(judge_config, sets["safety"], outcomes["safety"], bar)
    settings = eval_settings(samples, budgets, batch_size, seed, runner_device, lm, judge_config)
    settings["adapter"] = adapter_handling(target, lm)
    result = assemble(target, sets, outcomes, settings, time.time() - started)
    destination = Path(output) if output is not None else target.default_output
    if destination is not None:
        save_result(destination, result)
    report(result, destination)
    return result


# ----------------------------------------------------------------------------- options


def chosen_sets(arguments: dict[str, str | None]) -> dict[str, str]:
    chosen = {role: str(name) for role, name in arguments.items() if name is not None and str(name).strip().lower() != "none"}
    if not chosen:
        raise UsageError("every evaluation set is skipped; give at least one of --safety, --benign, --utility, --knowledge.")
    return chosen


def token_budgets(max_new_tokens: int | None) -> dict[str, int]:
    """New tokens per set: the defaults, or one value for every set."""
    if max_new_tokens is not None and max_new_tokens <= 0:
        raise UsageError(f"--max-new-tokens must be positive, got {max_new_tokens}.")
    return {role: max_new_tokens or DEFAULT_NEW_TOKENS[role] for role in SETS}


def check_options(samples: int | None, batch_size: int, judge: bool, chosen: dict[str, str]) -> None:
    if samples is not None and samples <= 0:
        raise UsageError(f"--samples must be positive, got {samples}.")
    if batch_size <= 0:
        raise UsageError(f"--batch-size must be positive, got {batch_size}.")
    if judge and "safety" not in chosen:
        raise UsageError("--judge scores the answers to the harmful requests; do not skip --safety.")


# ----------------------------------------------------------------------------- model


def locate_target(spec: str, adapter: str | Path | None) -> Target:
    """A run directory (by its manifest kind) or anything models.resolve_model accepts."""
    directory = Path(spec).expanduser()
    if (directory / MANIFEST).is_file():
        target = run_target(directory, spec)
    else:
        source = models.resolve_model(spec)
        target = Target(source.path, None, None, {"spec": spec, "kind": "model", **source.describe()})
    if adapter is not None:
        target = with_adapter(target, Path(adapter))
    return target


def run_target(directory: Path, spec: str) -> Target:
    manifest = load_manifest(directory, ("merge", "train", "init"))
    base = {"id": manifest.model.id, "revision": manifest.model.revision}
    record = {"spec": spec, "kind": manifest.kind, "path": str(directory.resolve()), "base": base}
    if manifest.kind == "merge":
        model_dir = directory / manifest.config.output
        verify_files(directory, manifest, only=(f"{manifest.config.output}/",))
        return Target(model_dir, None, directory / EVAL_FILE, {**record, "model_dir": str(model_dir)})
    init_dir = init_run_dir(directory, manifest)
    if not init_dir.is_dir():
        raise InputError("the init run this training started from is gone; evaluate the merged model instead.")
    verify_files(directory, manifest, only=("adapter/",) if manifest.kind == "train" else ("adapter/", "residual/"))
    if manifest.kind == "train":
        verify_files(init_dir, load_manifest(init_dir, "init"), only=("residual/",))
    adapter_dir = directory / "adapter"
    return Target(init_dir / "residual", adapter_dir, directory / EVAL_FILE,
                  {**record, "model_dir": str(init_dir / "residual"), "adapter": str(adapter_dir)})


def with_adapter(target: Target, adapter_dir: Path) -> Target:
    if not (adapter_dir / "adapter_config.json").is_file():
        raise InputError(f"{adapter_dir} has no adapter_config.json; pass a PEFT adapter directory to --adapter.")
    if not (adapter_dir / "adapter_model.safetensors").is_file():
        raise InputError(f"{adapter_dir} has no adapter_model.safetensors (pickled weights such as adapter_model.bin are never loaded); "
                         "convert the adapter to safetensors.")
    return Target(target.model_dir, adapter_dir, target.default_output, {**target.record, "adapter": str(adapter_dir)})


def load_for_eval(target: Target, device: torch.device):
    from transformers import AutoModelForCausalLM

    if not (target.model_dir / "config.json").is_file():
        raise InputError(f"{target.model_dir} is not a model directory (no config.json); re-create the run.")
    with models.remote_code_refused(target.model_dir), models.quiet_loading():
        model = AutoModelForCausalLM.from_pretrained(target.model_dir, dtype="auto", use_safetensors=True, trust_remote_code=False)
    if target.adapter_dir is not None:
        from peft import PeftModel

        with models.quiet_loading():
            model = folded_if_exact_enough(PeftModel.from_pretrained(model, target.adapter_dir))
    return model.to(device).eval(), models.load_tokenizer(target.model_dir)


def folded_if_exact_enough(peft_model):
    """Fold a float32 adapter into its base weights: the same function to float32 rounding, and
    generation skips the adapter's extra kernels in every layer. Half-precision bases
    keep the adapter unmerged, since folding would round the update to the base's coarser grid."""
    if next(peft_model.parameters()).dtype != torch.float32:
        return peft_model
    return peft_model.merge_and_unload()


# ----------------------------------------------------------------------------- result


def eval_settings(samples, budgets, batch_size, seed, device, model, judge_config: JudgeConfig | None) -> dict:
    return {"samples_per_set": samples, "max_new_tokens": budgets, "batch_size": batch_size, "seed": seed,
            "device": str(device), "dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
            "decoding": "greedy", "nll": f"mean per-token NLL (nats) of reference responses, max {NLL_MAX_LENGTH} tokens",
            "refusal_detector": "keyword, first 200 characters (sclora_tools.core.refusal)",
            "rouge": "rouge-score F-measure, Porter stemmer", "judge": judge_config.describe() if judge_config else None}


def adapter_handling(target: Target, model) -> str | None:
    if target.adapter_dir is None:
        return None
    return "unmerged (PEFT)" if hasattr(model, "peft_config") else "folded into the float32 weights in memory"


def assemble(target: Target, sets: dict, outcomes: dict, settings: dict, seconds: float) -> dict:
    metrics = {name: value for outcome in outcomes.values() for name, value in outcome.metrics.items()}
    return {
        "schema_version": SCHEMA_VERSION,
        "tool": {"name": "sclora-tools", "version": __version__},
        "model": target.record,
        "metrics": metrics,
        "sets": {role: {**evalset.loaded.spec.describe(), **evalset.loaded.record, "rows": evalset.loaded.total_rows,
                        "samples": len(evalset.examples)} for role, evalset in sets.items()},
        "settings": settings,
        "seconds": {**{role: outcome.seconds for role, outcome in outcomes.items()}, "total": round(seconds, 2)},
        "examples": {role: outcome.examples for role, outcome in outcomes.items()},
    }


def save_result(path: Path, result: dict) -> None:
    if path.is_dir():
        raise InputError(f"output {path} is a directory; give a file path such as {path / EVAL_FILE}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, result)


def percent(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1%}"


def number(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def report(result: dict, destination: Path | None) -> None:
    metrics, sets = result["metrics"], result["sets"]
    rows = [("model", result["model"]["spec"])]
    for role, evalset in sets.items():
        rows += metric_rows(role, metrics, f"{evalset['name']}, {evalset['samples']} of {evalset['rows']}")
    rows += [("output", str(destination) if destination else "not written (give -o FILE)"),
             ("time", f"{result['seconds']['total']} s")]
    ui.show(ui.summary_table("sclora eval", rows))


def metric_rows(role: str, metrics: dict, label: str) -> list[tuple[str, str]]:
    if role == "safety":
        rows = [(f"refusal rate ({label})", percent(metrics["refusal_rate"])), ("refusal NLL", number(metrics["refusal_nll"]))]
        if "harmfulness" in metrics:
            rows.append(("harmfulness (judge, 1-5)", number(metrics["harmfulness"], 2)))
        return rows
    if role == "benign":
        edgy = metrics.get("over_refusal_rate_edgy")
        value = percent(metrics["over_refusal_rate"]) + ("" if edgy is None else f" (edgy {percent(edgy)})")
        return [(f"over-refusal ({label})", value), ("benign NLL", number(metrics["benign_nll"]))]
    if role == "utility":
        rouge = " / ".join(number(metrics[kind]) for kind in ROUGE_TYPES)
        return [(f"ROUGE-1/2/L ({label})", rouge), ("summary NLL", number(metrics["summary_nll"]))]
    return [(f"knowledge EM ({label})", percent(metrics["knowledge_em"]))]
