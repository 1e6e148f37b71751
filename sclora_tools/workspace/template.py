"""`sclora new`: write a commented sclora.toml, every key with its description and default, taken
from the declarations in schema.py (so the file and the code cannot disagree)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from ..errors import InputError
from ..io.atomic import write_text
from .loading import CONFIG_FILE
from .schema import TABLES, TOP_LEVEL, PipelineConfig

HEADER = """\
# sclora.toml: this folder is an sclora workspace. Every `sclora` command run here (or in a folder
# below) takes its defaults from this file; command-line flags override it, and so do dotted
# overrides such as `sclora run init.beta=0.95 train.lr=1e-4`. Keys carry the CLI option names.
#
#   sclora run        calibrate -> init -> train -> merge -> eval -> push, skipping what is up to date
#   sclora status     each stage: done, stale (and why) or missing
#
# A key that is commented out takes the value shown. Relative paths are relative to this file.
"""
EXAMPLE_VALUES = {"pos": "dialogsum", "neg": "safety"}
GATE_EXAMPLE = '# refusal_rate = ">= 0.9"\n# rougeL = ">= 0.3"\n'


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value)


def key_lines(model: type[BaseModel], values: dict[str, Any], names: tuple[str, ...] | None = None) -> list[str]:
    lines = []
    for name, field in model.model_fields.items():
        if (names is not None and name not in names) or name in TABLES or name == "gates":
            continue
        key = field.alias or name
        default = field.get_default(call_default_factory=True)
        lines.append(f"# {field.description}")
        if key in values:
            lines.append(f"{key} = {toml_value(values[key])}")
        else:
            lines.append(f"# {key} = {toml_value(default)}" if default is not None else f"# {key} =")
    return lines


def render_template(model: str | None = None) -> str:
    values = {**EXAMPLE_VALUES, **({"model": model} if model else {})}
    parts = [HEADER, "\n".join(key_lines(PipelineConfig, values, TOP_LEVEL))]
    for name, table in TABLES.items():
        parts.append(f"\n[{name}]  # {PipelineConfig.model_fields[name].description}\n" + "\n".join(key_lines(table, {})))
    parts.append(f"\n[eval.gates]  # {TABLES['eval'].model_fields['gates'].description}\n{GATE_EXAMPLE}")
    return "\n".join(parts)


def write_template(folder: Path, model: str | None = None) -> Path:
    """Write FOLDER/sclora.toml (the folder is created); an existing file is never replaced."""
    target = Path(folder) / CONFIG_FILE
    if target.exists():
        raise InputError(f"{target} already exists; edit it, or choose another folder for the new workspace.")
    target.parent.mkdir(parents=True, exist_ok=True)
    write_text(target, render_template(model))
    return target
