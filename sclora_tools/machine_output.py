"""The one JSON document `sclora COMMAND --json` prints on stdout, success or failure.

Its shape is schemas/output.schema.json (package data): an envelope (format, command, ok,
exit_code) around the command's result, or around the error's kind and sentence. People read
stderr; a machine reads this document and nothing else on stdout.
"""

from __future__ import annotations

import functools
import json
import math
import sys
from importlib import resources
from typing import Any

FORMAT = "sclora-output/1"
SCHEMA_FILE = "output.schema.json"


def success(command: str | None, result: Any) -> dict:
    return {"format": FORMAT, "command": command, "ok": True, "exit_code": 0, "result": result}


def failure(command: str | None, exit_code: int, kind: str, message: str, result: Any = None) -> dict:
    """`result`: what the command had done when it stopped (a pipeline's report), when it says more than the error."""
    document = {"format": FORMAT, "command": command, "ok": False, "exit_code": exit_code, "error": {"kind": kind, "message": message}}
    return document if result is None else {**document, "result": result}


def write(document: dict) -> None:
    """The document on stdout, as strict JSON (a NaN metric becomes null), flushed at once."""
    sys.stdout.write(json.dumps(strict(document), indent=2, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def strict(value: Any) -> Any:
    """`value` with every non-finite float replaced by None: JSON has no NaN or Infinity."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: strict(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(item) for item in value]
    return value


@functools.lru_cache(maxsize=1)
def schema() -> dict:
    """The JSON Schema every document follows (draft 2020-12)."""
    return json.loads(resources.files("sclora_tools.schemas").joinpath(SCHEMA_FILE).read_text(encoding="utf-8"))


def schema_commands() -> list[str]:
    """The commands whose success document the schema describes."""
    return [entry["properties"]["command"]["const"] for entry in schema()["$defs"]["success"]["oneOf"]]
