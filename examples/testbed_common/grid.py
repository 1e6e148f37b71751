"""The grid both testbeds run: configurations x learning rates x seeds, each fine-tuned from its
init and evaluated; rates matched to the reference's update norm by a first (probe) pass; resumes.

Rate rule. Adam's update norm |dW|_F (the Frobenius norm of s(BA - B_init A_init) over every
adapted layer) grows in proportion to the learning rate, and at equal rates a method whose A starts
at principal components of W0 (SC-LoRA, PiSSA, CorDA) moves the weights several times more than
LoRA. A `MATCHED` rate is the one that gives the reference configuration's (LoRA's) |dW|_F at its
own rate: the first pass fine-tunes the reference and each such configuration once (seed 0, train
only) at `probe_lr`, and takes lr = probe_lr * target / probe_norm, to two significant figures.
A probe that already exists as a grid row (same configuration, rate and seed) is reused.
Probes go to rates.json, rows to results.json, both rewritten after every run.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from sclora_tools import init, train
from sclora_tools.core.methods import METHODS

MATCHED = "matched"


@dataclass(frozen=True)
class Config:
    """One row family of a table: an init method with its train-time flags, and its rates
    (numbers, or MATCHED for the rate the probe pass measures)."""

    name: str
    method: str
    beta: float = 0.0
    rates: tuple = (MATCHED,)
    freeze_a: bool = False
    freeze_b: bool = False

    def init_name(self, seed: int) -> str:
        """Only LoRA's init depends on the seed (its random A); the others are shared by every
        seed and by the locked and unlocked runs of one method and beta."""
        if self.method == "lora":
            return f"lora-s{seed}"
        return f"{self.method}-b{self.beta}" if METHODS[self.method].uses_beta else self.method

    def tag(self, lr: float, seed: int) -> str:
        return f"{self.name.replace(' ', '_').replace('=', '')}-lr{lr:g}-s{seed}"


@dataclass(frozen=True)
class RateRule:
    """MATCHED rates reproduce `reference`'s |dW|_F at `lr`; probes run at `probe_lr`, seed `seed`."""

    reference: str
    lr: float
    probe_lr: float
    seed: int = 0

    def describe(self, config: Config, rate) -> str:
        """How a planned rate of `config` was chosen."""
        if config.name == self.reference:
            return "reference"
        if rate == MATCHED or rate != self.lr:
            return f"matched update norm ({self.reference} at {self.lr:g})"
        return "equal lr"


@dataclass(frozen=True)
class Training:
    """Every run's fine-tune; data None = the calibration's D+ by its registry name."""

    steps: int
    rank: int
    batch_size: int
    max_length: int
    data: str | None = None


def matched_rate(probe_lr: float, probe_norm: float, target_norm: float) -> float:
    """The rate whose |dW|_F should equal target_norm, given probe_norm at probe_lr (linear in lr)."""
    if not (math.isfinite(probe_norm) and probe_norm > 0 and math.isfinite(target_norm) and target_norm > 0):
        raise ValueError(f"cannot match an update norm of {target_norm} from a probe norm of {probe_norm}")
    rate = probe_lr * target_norm / probe_norm
    return float(f"{rate:.2g}")


def chosen_configs(configs: list[Config], names: list[str]) -> list[Config]:
    return [c for c in configs if c.name in names]


def arms(configs: list[Config], rates: dict[str, float], lrs: list[float] | None) -> list[tuple[Config, float]]:
    """(config, lr) for every chosen configuration and each of its rates that is known (a MATCHED
    one once its probe ran), restricted to `lrs` when given (MATCHED rates then only if listed)."""
    chosen = []
    for config in configs:
        for rate in config.rates:
            lr = rates.get(config.name) if rate == MATCHED else rate
            if lr is not None and (lrs is None or lr in lrs):
                chosen.append((config, lr))
    return chosen


def needs_probe(configs: list[Config], lrs: list[float] | None) -> bool:
    return lrs is None and any(MATCHED in c.rates for c in configs)


def job_for(config: Config, lr: float, seed: int, out: Path, training: Training, threads: int, evaluator, eval_args: dict) -> dict:
    """Everything one fine-tune needs, picklable for a spawned worker; evaluator None = probe."""
    where = out / ("probes" if evaluator is None else "") / config.tag(lr, seed)
    return {"config": asdict(config), "lr": lr, "seed": seed, "dir": str(where), "init": str(out / "inits" / config.init_name(seed)),
            "threads": threads, "training": asdict(training), "evaluator": evaluator, "eval": eval_args}


def plan(configs: list[Config], rates: dict[str, float], seeds: list[int], lrs, out: Path, training: Training, threads: int,
         evaluator, eval_args: dict) -> list[dict]:
    """Seed by seed, so that a grid cut short still has every configuration at the seeds it reached."""
    return [job_for(config, lr, seed, out, training, threads, evaluator, eval_args)
            for seed in seeds for config, lr in arms(configs, rates, lrs)]


def make_inits(jobs: list[dict], calib: Path, rank: int) -> None:
    for job in jobs:
        target, config = Path(job["init"]), job["config"]
        if not (target / "manifest.json").is_file():
            init(calib, target, method=config["method"], beta=config["beta"], rank=rank, seed=job["seed"], progress=False)


def run_one(job: dict) -> dict:
    """Fine-tune one (config, lr, seed) from its init and, unless it is a probe, evaluate it."""
    torch.set_num_threads(job["threads"])
    run, config, training = Path(job["dir"]), job["config"], job["training"]
    started = time.time()
    trained = train(Path(job["init"]), run / "trained", data_argument=training["data"], max_steps=training["steps"], lr=job["lr"],
                    batch_size=training["batch_size"],
                    max_length=training["max_length"], seed=job["seed"], freeze_a=config["freeze_a"], freeze_b=config["freeze_b"],
                    progress=False)
    shutil.rmtree(run / "trained" / "checkpoints", ignore_errors=True)
    summary = trained["summary"]
    row = {"config": config["name"], "lr": job["lr"], "seed": job["seed"], "train_seconds": round(time.time() - started, 1),
           "update_norm": summary["update_norm"], "update_outside_fraction": summary["subspace"].get("update_outside_fraction")}
    if job["evaluator"] is not None:
        evaluated = time.time()
        row.update(job["evaluator"](run / "trained", run, job["eval"]))
        row["eval_seconds"] = round(time.time() - evaluated, 1)
    return row


def run_jobs(jobs: list[dict], workers: int, record: Callable[[dict], None]) -> None:
    if workers == 1 or len(jobs) <= 1:
        for job in jobs:
            record(run_one(job))
        return
    with multiprocessing.get_context("spawn").Pool(min(workers, len(jobs)), maxtasksperchild=1) as pool:
        for row in pool.imap_unordered(run_one, jobs):
            record(row)


class Store:
    """results.json (grid rows) and rates.json (probes) in --out, each tied to the settings it
    was made with; rewritten after every run, so an interrupted grid resumes where it stopped."""

    def __init__(self, out: Path, settings: dict | None) -> None:
        """settings None: read whatever is there (to print a table without running)."""
        self.results, self.rates_path, self.settings = out / "results.json", out / "rates.json", settings
        self.rows = self.read(self.results, "rows", [])
        self.probes = self.read(self.rates_path, "probes", {})

    def read(self, path: Path, key: str, empty):
        if not path.is_file():
            return empty
        saved = json.loads(path.read_text())
        if self.settings is not None and saved["settings"] != self.settings:
            sys.exit(f"{path} was made with other settings or another model; pass a new --out to start afresh.")
        return saved[key]

    def add_row(self, row: dict) -> None:
        self.rows.append(row)
        write_json(self.results, {"settings": self.settings, "rows": self.rows})
        print(json.dumps(row), flush=True)

    def add_probe(self, row: dict) -> None:
        self.probes[row["config"]] = {k: row[k] for k in ("lr", "seed", "update_norm", "train_seconds")}
        write_json(self.rates_path, {"settings": self.settings, "probes": self.probes})
        print(json.dumps({"probe": row["config"], **self.probes[row["config"]]}), flush=True)

    def done(self) -> set[tuple[str, float, int]]:
        return {(r["config"], r["lr"], r["seed"]) for r in self.rows}

    def norm_at(self, name: str, lr: float, seed: int) -> float | None:
        """|dW|_F of `name` at (lr, seed): a probe, or a grid row that ran there."""
        probe = self.probes.get(name)
        if probe is not None and (probe["lr"], probe["seed"]) == (lr, seed):
            return probe["update_norm"]
        return next((r["update_norm"] for r in self.rows if (r["config"], r["lr"], r["seed"]) == (name, lr, seed)), None)


def write_json(path: Path, document: dict) -> None:
    staging = path.with_name(path.name + ".tmp")
    staging.write_text(json.dumps(document, indent=2) + "\n")
    staging.replace(path)


def probe_points(configs: list[Config], all_configs: list[Config], rule: RateRule) -> list[tuple[Config, float]]:
    """The reference at its rate, and every MATCHED configuration at the probe rate."""
    reference = next(c for c in all_configs if c.name == rule.reference)
    return [(reference, rule.lr), *((c, rule.probe_lr) for c in configs if MATCHED in c.rates and c.name != rule.reference)]


def probe_measurements(store: Store, all_configs: list[Config], rule: RateRule) -> list[tuple[str, float, float | None]]:
    """(configuration, probe lr, |dW|_F or None while unmeasured) for every probe of the grid."""
    return [(c.name, lr, store.norm_at(c.name, lr, rule.seed)) for c, lr in probe_points(all_configs, all_configs, rule)]


def resolve_rates(store: Store, configs: list[Config], all_configs: list[Config], rule: RateRule, calib: Path, out: Path,
                  training: Training, workers: int, evaluator, eval_args: dict) -> dict[str, float]:
    """First pass: run the probes not yet measured, then each MATCHED configuration's rate. A probe
    point that is also a chosen grid row (the reference at its rate) runs as that row, evaluated."""
    points = probe_points(configs, all_configs, rule)
    threads = max(1, torch.get_num_threads() // workers)
    missing = [job_for(c, lr, rule.seed, out, training, threads, evaluator if c in configs and lr in c.rates else None, eval_args)
               for c, lr in points if store.norm_at(c.name, lr, rule.seed) is None]
    make_inits(missing, calib, training.rank)
    run_jobs(missing, workers, lambda row: store.add_row(row) if "eval_seconds" in row else store.add_probe(row))
    target = store.norm_at(rule.reference, rule.lr, rule.seed)
    return {c.name: rate_of_probe(c.name, lr, store.norm_at(c.name, lr, rule.seed), target) for c, lr in points[1:]}


def rate_of_probe(name: str, lr: float, norm: float, target: float) -> float:
    try:
        return matched_rate(lr, norm, target)
    except ValueError as error:
        sys.exit(f"{name}: {error} (rates.json); if the probe diverged, pass a lower --probe-lr.")


def known_rates(store: Store, all_configs: list[Config], rule: RateRule) -> dict[str, float]:
    """The MATCHED rates the probes already measured (for a table made without running)."""
    target = store.norm_at(rule.reference, rule.lr, rule.seed)
    if target is None:
        return {}
    rates = {}
    for config in all_configs:
        norm = store.norm_at(config.name, rule.probe_lr, rule.seed)
        if MATCHED in config.rates and norm is not None:
            rates[config.name] = rate_of_probe(config.name, rule.probe_lr, norm, target)
    return rates


def run_grid(store: Store, configs: list[Config], all_configs: list[Config], rule: RateRule, args, calib: Path, training: Training,
             evaluator, eval_args: dict) -> dict[str, float]:
    """Probe pass (when a chosen configuration has a MATCHED rate), then every missing grid row."""
    rates = known_rates(store, all_configs, rule)
    if needs_probe(configs, args.lrs):
        rates.update(resolve_rates(store, configs, all_configs, rule, calib, args.out, training, args.jobs, evaluator, eval_args))
    threads = max(1, torch.get_num_threads() // args.jobs)
    done = store.done()
    jobs = [j for j in plan(configs, rates, args.seeds, args.lrs, args.out, training, threads, evaluator, eval_args)
            if (j["config"]["name"], j["lr"], j["seed"]) not in done]
    make_inits(jobs, calib, training.rank)
    run_jobs(jobs, args.jobs, store.add_row)
    return rates
