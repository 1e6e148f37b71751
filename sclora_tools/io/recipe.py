"""How to make an artefact again: one `sclora` command per stage of its manifest chain, each with
every setting the stage resolved and recorded, not the command line of the process that ran it
(which may be a Python script, a notebook or `sclora demo`). Pure: manifests in, shell lines out.

The folders are the conventional ones (calib, run, trained, merged). Options that only choose
where or how a stage runs and never change what it writes (--device, --sequential, --device-map,
--checkpoint-every, --shard-size, --save-steps, --resume) are left out."""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping, Sequence
from typing import Any

from .manifest import Manifest
from .manifest_settings import CalibrationConfig, InitConfig, TrainSettings
from .manifest_types import DatasetRecord, ModelRecord, Role

FOLDERS = {"calibration": "calib", "init": "run", "train": "trained", "merge": "merged"}
EVAL_SETS = ("safety", "benign", "utility", "knowledge")  # `sclora eval`'s options that name a set
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")


def commands(manifest: Manifest, eval_report: Mapping[str, Any] | None = None) -> list[str]:
    """The shell lines that make `manifest`'s artefact again, in stage order; then `sclora eval` when
    an eval report is given."""
    lines = []
    for stage in manifest.lineage():
        line = STAGE_LINES.get(stage.kind)
        if line is not None:
            lines.append(line(stage, manifest))
    if eval_report:
        lines.append(eval_line(eval_report))
    return lines


def shell(words: Sequence[object]) -> str:
    return " ".join(shlex.quote(str(word)) for word in words)


def options(pairs: Sequence[tuple[str, object]]) -> list[str]:
    """`--name value` for every pair whose value is not None; a True flag alone, a False one not at all."""
    words: list[str] = []
    for name, value in pairs:
        if value is True:
            words.append(name)
        elif value is not None and value is not False:
            words += [name, str(value)]
    return words


# ----------------------------------------------------------------------------- one line per stage


def calibrate_line(stage: Manifest, top: Manifest) -> str:
    config: CalibrationConfig = stage.config
    extra_methods = [method for method in config.for_methods if method != "sclora"]
    words = ["sclora", "calibrate", model_argument(stage.model), *options([
        ("--pos", data_argument(stage.dataset(Role.POS))),
        ("--neg", data_argument(stage.dataset(Role.NEG))),
        ("-o", FOLDERS["calibration"]),
        ("--samples", config.samples),
        ("--max-length", config.max_length),
        ("--batch-size", config.batch_size),
        ("--targets", targets_argument(config.targets, top)),
        ("--dtype", config.dtype),
        ("--seed", config.seed),
        ("--normalize", config.normalization),
        ("--accumulate-dtype", config.accumulate_dtype),
        ("--for", ",".join(extra_methods) or None),
        ("--storage", config.storage),
    ])]
    return shell(words)


def init_line(stage: Manifest, top: Manifest) -> str:
    config: InitConfig = stage.config
    words = ["sclora", "init", FOLDERS["calibration"], *options([
        ("-o", FOLDERS["init"]),
        ("--method", config.method),
        ("--beta", config.beta),
        ("--rank", config.rank),
        ("--alpha", config.alpha),
        ("--seed", config.seed),
    ])]
    return shell(words)


def train_line(stage: Manifest, top: Manifest) -> str:
    settings: TrainSettings = stage.config.train or TrainSettings()
    record = stage.dataset(Role.TRAIN)
    sampled = record is not None and record.samples is not None and record.rows_available is not None and record.samples < record.rows_available
    launcher = ["torchrun", "--nproc_per_node", settings.world_size, "$(command -v sclora)"] if settings.world_size > 1 else ["sclora"]
    words = [*launcher, "train", FOLDERS["init"], *options([
        ("-o", FOLDERS["train"]),
        ("--data", data_argument(record) if record is not None else settings.data),
        ("--samples", record.samples if sampled else None),
        ("--epochs", settings.epochs),
        ("--max-steps", settings.max_steps),
        ("--lr", settings.lr),
        ("--batch-size", settings.batch_size),
        ("--grad-accum", settings.grad_accum),
        ("--max-length", settings.max_length),
        ("--seed", settings.seed),
        ("--freeze-a", settings.freeze_a),
        ("--freeze-b", settings.freeze_b),
        ("--gradient-checkpointing", settings.gradient_checkpointing),
        ("--bf16", settings.bf16),
    ])]
    line = shell(words)
    return line.replace(shlex.quote("$(command -v sclora)"), "$(command -v sclora)")  # the launcher runs the installed script


def merge_line(stage: Manifest, top: Manifest) -> str:
    source = FOLDERS["train"] if stage.parent("train") is not None else FOLDERS["init"]
    return shell(["sclora", "merge", source, "-o", FOLDERS["merge"]])


STAGE_LINES = {"calibration": calibrate_line, "init": init_line, "train": train_line, "merge": merge_line}


def eval_line(report: Mapping[str, Any]) -> str:
    """`sclora eval` on the merge with the report's sets and settings."""
    settings = report.get("settings") if isinstance(report.get("settings"), Mapping) else {}
    sets = report.get("sets") if isinstance(report.get("sets"), Mapping) else {}
    chosen = [(f"--{role}", entry.get("name")) for role, entry in sets.items() if isinstance(entry, Mapping)]
    skipped = [(f"--{role}", "none") for role in EVAL_SETS if role not in sets]
    return shell(["sclora", "eval", FOLDERS["merge"], *options([
        *chosen, *skipped,
        ("--samples", settings.get("samples_per_set")),
        ("--max-new-tokens", one_budget(settings.get("max_new_tokens"))),
        ("--batch-size", settings.get("batch_size")),
        ("--seed", settings.get("seed")),
    ])])


def one_budget(budgets: object) -> int | None:
    """--max-new-tokens: the one budget every set had, else None (then the budgets differ per set,
    which only the defaults do)."""
    values = set(budgets.values()) if isinstance(budgets, Mapping) else set()
    return values.pop() if len(values) == 1 else None


# ----------------------------------------------------------------------------- arguments


def model_argument(model: ModelRecord) -> str:
    """A Hub model pinned to the revision that was read; otherwise the model as it was given."""
    hub = model.id is not None and HUB_ID.match(model.id) and model.id != model.path
    if hub and model.revision:
        return f"{model.id}@{model.revision}"
    return str(model.spec or model.id or model.path)


def data_argument(record: DatasetRecord | None) -> str | None:
    """A dataset as the command line names it: its registry name, its file, or its Hub id pinned to
    the commit that was read, with its split."""
    if record is None:
        return None
    if record.kind == "file":
        return record.source
    if record.kind == "hub" and record.source and "/" in str(record.name or "/"):
        pinned = record.commit or record.revision  # the commit the revision resolved to, when recorded
        revision = f"@{pinned}" if pinned else ""
        split = f":{record.split}" if record.split and record.split != "train" else ""
        return f"{record.source}{revision}{split}"
    return record.name


def targets_argument(targets: Sequence[str], top: Manifest) -> str | None:
    """--targets: the layer kinds (q_proj,...) when the targets are every layer of those kinds in the
    checkpoint (known from init's list of source tensors), else the full module names."""
    if not targets:
        return None
    kinds = list(dict.fromkeys(name.rsplit(".", 1)[-1] for name in targets))  # in the model's order
    init = next((stage for stage in top.lineage() if stage.kind == "init"), None)
    tensors = init.source_tensors if init is not None else {}
    every = {name.removesuffix(".weight") for name in tensors if name.endswith(".weight")
             and name.removesuffix(".weight").rsplit(".", 1)[-1] in kinds}
    return ",".join(kinds) if every == set(targets) else ",".join(targets)
