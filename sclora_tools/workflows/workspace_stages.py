"""One stage of a workspace: its settings from sclora.toml (with the command's flags on top), its
input found through the previous stage's manifest, its output in the stage's folder, and its
identity and resolved settings recorded in what it writes. `sclora calibrate` ... `sclora push` and
`sclora run` all go through `run_stage`."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..io.atomic import MANIFEST, write_json
from ..io.checkpoint import parse_size
from ..io.manifest import recording_stage
from ..stages import calibrate as calibrate_stage
from ..stages import evaluate as evaluate_stage
from ..stages import init as init_stage
from ..stages import merge as merge_stage
from ..stages import push as push_stage
from ..stages import train as train_stage
from ..workspace.identity import Expected, input_digest, sealed
from ..workspace.loading import Workspace
from ..workspace.plan import identity_settings, input_folder, input_stages, output_of


def split_list(text: str | None) -> list[str] | None:
    return [part.strip() for part in text.split(",") if part.strip()] if text else None


def require(workspace: Workspace, stages: tuple[str, ...] | list[str]) -> None:
    """Refuse, before anything runs, a value a stage needs that nobody set; the sentence names the key."""
    config = workspace.config
    if "calibrate" in stages:
        for key, flag in (("pos", "--pos"), ("neg", "--neg")):
            if getattr(config, key) is None:
                raise UsageError(f"no {'+' if key == 'pos' else '-'} data set: set {key} in sclora.toml or pass {flag}.")
    if "push" in stages and config.repo_id is None and config.push.to is None:
        raise UsageError("no Hub repo id set: set repo_id in sclora.toml, pass --repo-id ORG/NAME, or publish to a folder "
                         "with push.to / --to DIR.")


def local_repo_id(workspace: Workspace) -> str:
    """The repo id the card names when a workspace publishes to a folder without one."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", workspace.root.name).strip("-.") or "model"
    return f"local/{name}"


def push_repo_id(workspace: Workspace, extra: dict[str, Any]) -> str:
    """The repo id to publish as: the workspace's, or for a folder (push.to / --to) a local name."""
    if workspace.config.repo_id is not None:
        return workspace.config.repo_id
    if workspace.push_to is None and extra.get("to") is None:
        require(workspace, ("push",))
    return local_repo_id(workspace)


def run_stage(workspace: Workspace, stage: str, *, source: Path | None = None, output: Path | None = None,
              extra: dict[str, Any] | None = None, in_pipeline: bool = False, progress: bool = True) -> dict:
    """Run `stage` with the workspace's settings; `source` / `output` override the conventional folders,
    `extra` passes options that only a command has (resume, rebuild_base, dry_run, ...)."""
    if stage == "push":
        push_repo_id(workspace, extra or {})  # the missing repo id is named before the missing merge
    sources = stage_sources(workspace, stage, source, in_pipeline)
    wanted = Expected(stage, identity_settings(workspace, stage), {name: digest(path) for name, path in sources.items()})
    conventional = output is None and source is None
    target = output if output is not None else None if stage == "eval" and source is not None else output_of(workspace, stage)
    settings, extra = workspace.settings(stage), extra or {}
    with recording_stage(wanted.record()):
        result = RUNNERS[stage](workspace, settings, primary(sources), target, extra, progress)
    if stage in ("eval", "push") and conventional and result is not None and not extra.get("dry_run"):
        write_json(output_of(workspace, stage), sealed(recorded(stage, result), wanted))
    return result


def stage_sources(workspace: Workspace, stage: str, source: Path | None, in_pipeline: bool) -> dict[str, Path]:
    """{input stage: its output} for the identity; an explicit `source` stands for the first input."""
    names = input_stages(workspace, stage, in_pipeline)
    if not names:
        return {}
    first = Path(source) if source is not None else input_folder(workspace, stage, in_pipeline)
    found = {names[0]: first}
    found.update({name: output_of(workspace, name) for name in names[1:]})
    return found


def primary(sources: dict[str, Path]) -> Path | None:
    """The input the stage function reads (push also covers eval.json in its identity, but reads it itself)."""
    return next(iter(sources.values()), None)


def digest(path: Path) -> str:
    """The sha256 of an input: its manifest, the file itself, or (a model name such as an embedded one) the name."""
    if (path / MANIFEST).is_file() or path.is_file():
        return input_digest(path)
    return hashlib.sha256(str(path).encode("utf-8")).hexdigest()


def recorded(stage: str, result: dict) -> dict:
    """What eval.json / push.json keep: the eval report as written, the push record without its card."""
    return {key: value for key, value in result.items() if key != "card"} if stage == "push" else result


# ----------------------------------------------------------------------------- one function per stage


def run_calibrate(workspace: Workspace, s: dict, source: Path | None, target: Path, extra: dict, progress: bool) -> dict:
    return calibrate_stage.calibrate(s["model"], s["pos"], s["neg"], target, samples=s["samples"], max_length=s["max_length"],
                     batch_size=s["batch_size"],
                     targets=split_list(s["targets"]), dtype=s["dtype"], device=s["device"], seed=s["seed"], normalization=s["normalize"],
                     accumulate_dtype=s["accumulate_dtype"], for_methods=s["for"], storage=s["storage"], sequential=s["sequential"],
                     device_map=s["device_map"], checkpoint_every=s["checkpoint_every"], resume=extra.get("resume", False),
                     trust_remote_code=s["trust_remote_code"], progress=progress)


def run_init(workspace: Workspace, s: dict, source: Path | None, target: Path, extra: dict, progress: bool) -> dict:
    return init_stage.init(source, target, beta=s["beta"], rank=s["rank"], alpha=s["alpha"], method=s["method"], model=extra.get("model"),
                seed=s["seed"], shard_bytes=parse_size(s["shard_size"]), progress=progress)


def run_train(workspace: Workspace, s: dict, source: Path | None, target: Path, extra: dict, progress: bool) -> dict:
    return train_stage.train(source, target, data_argument=s["data"], samples=s["samples"], epochs=s["epochs"], max_steps=s["max_steps"], lr=s["lr"],
                 batch_size=s["batch_size"], grad_accum=s["grad_accum"], max_length=s["max_length"], seed=s["seed"], freeze_a=s["freeze_a"],
                 freeze_b=s["freeze_b"], gradient_checkpointing=s["gradient_checkpointing"], bf16=s["bf16"], resume=extra.get("resume", False),
                 save_steps=s["save_steps"], progress=progress)


def run_merge(workspace: Workspace, s: dict, source: Path | None, target: Path, extra: dict, progress: bool) -> dict:
    rebuild_base = extra.get("rebuild_base")
    return merge_stage.merge(source, None if rebuild_base is not None else target, rebuild_base=rebuild_base, shard_bytes=parse_size(s["shard_size"]),
                 progress=progress)


def run_eval(workspace: Workspace, s: dict, source: Path | None, target: Path | None, extra: dict, progress: bool) -> dict:
    return evaluate_stage.evaluate(str(source), safety=s["safety"], benign=s["benign"], utility=s["utility"], knowledge=s["knowledge"],
                    samples=s["samples"],
                    max_new_tokens=s["max_new_tokens"], batch_size=s["batch_size"], adapter=extra.get("adapter"), output=target,
                    judge=s["judge"], seed=s["seed"], device=s["device"], progress=progress)


def run_push(workspace: Workspace, s: dict, source: Path | None, target: Path, extra: dict, progress: bool) -> dict:
    return push_stage.push(source, push_repo_id(workspace, extra), private=s["private"], revision=s["revision"],
                commit_message=s["commit_message"], what=s["what"],
                dry_run=extra.get("dry_run", False), to=push_destination(workspace, extra),
                keep_local_paths=s["keep_local_paths"], progress=progress)


def push_destination(workspace: Workspace, extra: dict) -> Path | None:
    """--to, else push.to from the file (which --dry-run, a plan only, leaves aside)."""
    if extra.get("to") is not None:
        return Path(extra["to"])
    return None if extra.get("dry_run") else workspace.push_to


RUNNERS = {"calibrate": run_calibrate, "init": run_init, "train": run_train, "merge": run_merge, "eval": run_eval, "push": run_push}
