"""The flags a command was actually given (not its defaults), as sclora.toml keys, so that the
workspace file fills the rest: flags override the file, the file overrides the built-in defaults."""

from __future__ import annotations

from pathlib import Path

import typer

from sclora_tools.workspace.loading import Workspace, announce, load_workspace

TOP_LEVEL = {"model", "pos", "neg", "repo_id"}
RENAMED = {"for_methods": "for"}
DEFAULTED = ("DEFAULT", "DEFAULT_MAP")  # by name: typer may bring its own copy of click's ParameterSource


def defaulted(ctx: typer.Context, name: str) -> bool:
    source = ctx.get_parameter_source(name)
    return source is None or source.name in DEFAULTED


def given_flags(ctx: typer.Context, table: str, command_only: set[str]) -> dict[str, dict]:
    """{"" : top-level keys, table: the table's keys} for every option typed on the command line."""
    found: dict[str, dict] = {"": {}, table: {}}
    for name, value in ctx.params.items():
        if name in command_only or name == "as_json" or value is None or defaulted(ctx, name):
            continue
        key = RENAMED.get(name, name)
        found["" if key in TOP_LEVEL else table][key] = str(value.resolve()) if isinstance(value, Path) else value
    return found


def workspace_for(ctx: typer.Context, table: str, command_only: set[str], typed_paths: bool = True) -> Workspace:
    """The workspace around the current folder with this command's flags on top; one line on stderr
    when there is no sclora.toml and a default is being used (`typed_paths` False)."""
    flags = given_flags(ctx, table, command_only)
    workspace = load_workspace(given=flags)
    if not typed_paths:
        announce(workspace, model_given="model" in flags[""])
    return workspace
