"""Find the workspace (the folder whose sclora.toml is here or in a parent), read it, apply dotted
overrides (`init.beta=0.95`) and the command's own flags, and validate: an unknown key, a wrong type
or an out-of-range value is one sentence that names the key."""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

from .. import ui
from ..errors import InputError, UsageError
from .schema import DEFAULT_MODEL, STAGE_GLOBALS, TABLES, PipelineConfig

CONFIG_FILE = "sclora.toml"
FOLDERS = {"calibrate": "calibration", "init": "init", "train": "train", "merge": "merge"}
EVAL_FILE = "eval.json"  # inside the merge folder, where `sclora push` finds it for the card
PUSH_RECORD = "push.json"
# Values that name a file or folder: taken relative to sclora.toml's folder when that path exists there.
PATH_KEYS = (("model",), ("pos",), ("neg",), ("train", "data"))


@dataclass(frozen=True)
class Workspace:
    """A workspace: its root, its sclora.toml (None: built-in defaults) and the resolved configuration."""

    root: Path
    file: Path | None
    config: PipelineConfig

    @property
    def outputs(self) -> Path:
        return self.root / self.config.outputs

    def folder(self, stage: str) -> Path:
        """The conventional output folder of calibrate, init, train or merge."""
        return self.outputs / FOLDERS[stage]

    @property
    def eval_file(self) -> Path:
        return self.folder("merge") / EVAL_FILE

    @property
    def push_record(self) -> Path:
        return self.outputs / PUSH_RECORD

    def settings(self, stage: str) -> dict[str, Any]:
        """The resolved settings of one stage, under the names of sclora.toml."""
        table = getattr(self.config, stage).model_dump(by_alias=True)
        return {**{key: getattr(self.config, key) for key in STAGE_GLOBALS.get(stage, ())}, **table}

    @property
    def push_to(self) -> Path | None:
        return None if self.config.push.to is None else self.root / self.config.push.to

    def describe(self) -> str:
        return str(self.file) if self.file else f"built-in defaults in {self.root}"


def find_config(start: Path) -> Path | None:
    for folder in (start, *start.parents):
        if (folder / CONFIG_FILE).is_file():
            return folder / CONFIG_FILE
    return None


def load_workspace(pipeline: str | Path | None = None, overrides: Iterable[str] = (), given: Mapping[str, Mapping[str, Any]] | None = None,
                   start: Path | None = None) -> Workspace:
    """The workspace around `start` (default: the current folder), or the one of the file `pipeline`.

    `overrides` are dotted KEY=VALUE strings; `given` holds a command's flags as {table: {key: value}}
    ("" for the top-level keys). Both win over the file."""
    file = Path(pipeline) if pipeline is not None else find_config((start or Path.cwd()).resolve())
    if pipeline is not None and not file.is_file():
        raise InputError(f"pipeline file {file} does not exist; pass the path of an sclora.toml or run `sclora new` to write one.")
    raw = read_toml(file) if file is not None else {}
    root = file.resolve().parent if file is not None else (start or Path.cwd()).resolve()
    anchor_paths(raw, root)
    for override in overrides:
        apply_override(raw, override)
    config = validate(raw, f"{file} or the overrides" if file is not None else "the overrides")
    if any((given or {}).values()):
        config = with_flags(config, given)
    return Workspace(root=root, file=file, config=config)


def with_flags(config: PipelineConfig, given: Mapping[str, Mapping[str, Any]]) -> PipelineConfig:
    """The configuration with a command's flags on top. Typer has checked their types; their ranges
    are the stage's to check, so that its message names the option as the user typed it."""
    update: dict[str, Any] = dict(given.get("", {}))
    for table, values in given.items():
        if table and values:
            fields = type(getattr(config, table)).model_fields
            renamed = {next((name for name, f in fields.items() if f.alias == key), key): value for key, value in values.items()}
            update[table] = getattr(config, table).model_copy(update=renamed)
    return config.model_copy(update=update)


def read_toml(file: Path) -> dict:
    try:
        return tomllib.loads(file.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{file} is not valid TOML ({exc}); fix the line it names.") from None


def anchor_paths(raw: dict, root: Path) -> None:
    """A path in the file means a path beside the file, wherever the command runs."""
    for key_path in PATH_KEYS:
        holder = raw
        for key in key_path[:-1]:
            holder = holder.get(key) if isinstance(holder.get(key), dict) else {}
        value = holder.get(key_path[-1])
        if isinstance(value, str) and not Path(value).is_absolute() and (root / value).exists():
            holder[key_path[-1]] = str((root / value).resolve())
    push = raw.get("push")
    if isinstance(push, dict) and isinstance(push.get("to"), str):
        push["to"] = str((root / push["to"]).resolve())


def parse_override(text: str) -> tuple[list[str], Any]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise UsageError(f"override {text!r} is not KEY=VALUE; write it like init.beta=0.95.")
    try:
        parsed = tomllib.loads(f"v = {value}")["v"]
    except tomllib.TOMLDecodeError:
        parsed = value  # a bare word: a string, as a shell user types it (train.data=samsum)
    return key.strip().split("."), parsed


def apply_override(raw: dict, text: str) -> None:
    path, value = parse_override(text)
    holder = raw
    for part in path[:-1]:
        if part not in TABLES and holder is raw:
            raise UsageError(f"override {text!r}: {part!r} is not a table of sclora.toml; the tables are {', '.join(TABLES)}.")
        holder = holder.setdefault(part, {})
        if not isinstance(holder, dict):
            raise UsageError(f"override {text!r}: {part} is a value, not a table.")
    holder[path[-1]] = value


def validate(raw: dict, where: str) -> PipelineConfig:
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as exc:
        raise UsageError(describe_error(exc.errors()[0], where)) from None


def describe_error(error: Mapping[str, Any], where: str) -> str:
    """One sentence naming the key of sclora.toml or of an override."""
    key = ".".join(str(part) for part in error["loc"])
    if error["type"] == "extra_forbidden":
        table = str(error["loc"][0]) if len(error["loc"]) > 1 else ""
        known = known_keys(table)
        return f"unknown key {key} (in {where}); the keys{f' of [{table}]' if table else ''} are: {', '.join(known)}."
    message = str(error["msg"]).replace("Input should be", "should be")
    return f"{key} {message}, got {error.get('input')!r} (in {where}); fix the value."


def known_keys(table: str) -> list[str]:
    model = TABLES.get(table, PipelineConfig)
    return [field.alias or name for name, field in model.model_fields.items()]


def announce(workspace: Workspace, model_given: bool = False) -> None:
    """One line on stderr when no sclora.toml was found: what the built-in defaults are."""
    if workspace.file is not None:
        return
    model = "" if model_given or workspace.config.model != DEFAULT_MODEL else f"model {DEFAULT_MODEL} (embedded), "
    ui.console.print(f"no {CONFIG_FILE} here or above: built-in defaults, {model}outputs under ./{workspace.config.outputs}/", highlight=False)


def split_arguments(arguments: Iterable[str]) -> tuple[str | None, list[str]]:
    """`sclora run [PIPELINE] [KEY=VALUE ...]`: the pipeline file (if any) and the dotted overrides."""
    pipeline, overrides = None, []
    for argument in arguments:
        if "=" in argument:
            overrides.append(argument)
        elif pipeline is None:
            pipeline = argument
        else:
            raise UsageError(f"two pipeline files given ({pipeline}, {argument}); give one, and overrides as KEY=VALUE.")
    return pipeline, overrides
