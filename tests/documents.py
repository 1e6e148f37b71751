"""The `--json` documents of the command line: exactly one JSON document on stdout, valid against
the schema the package ships (sclora_tools/schemas/output.schema.json)."""

from __future__ import annotations

import json

import jsonschema

from sclora_tools.machine_output import schema


def document(stdout: str) -> dict:
    """The one document on stdout, validated (stdout holds nothing else)."""
    parsed = json.loads(stdout)
    jsonschema.Draft202012Validator(schema()).validate(parsed)
    return parsed


def result_of(stdout: str, command: str) -> dict:
    """The result of a successful `command`."""
    parsed = document(stdout)
    assert parsed["ok"] is True and parsed["exit_code"] == 0 and parsed["command"] == command, parsed
    return parsed["result"]


def failure_of(stdout: str, command: str | None, exit_code: int, kind: str | None = None) -> dict:
    """The error ({kind, message}) of a failed `command` that exited with `exit_code`."""
    parsed = document(stdout)
    assert parsed["ok"] is False and parsed["exit_code"] == exit_code and parsed["command"] == command, parsed
    if kind is not None:
        assert parsed["error"]["kind"] == kind, parsed
    return parsed["error"]
