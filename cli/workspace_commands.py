"""`sclora new`, `sclora run` and `sclora status`: the workspace commands. With --json each prints
one JSON document on stdout, on success and on failure; people read stderr."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from sclora_tools import ui
from sclora_tools.errors import StaleError
from sclora_tools.workflows.pipeline import run_pipeline
from sclora_tools.workspace.loading import load_workspace, split_arguments
from sclora_tools.workspace.plan import status as stage_status
from sclora_tools.workspace.template import write_template

from .errors import JsonFlag, handled

PipelineArgs = Annotated[list[str] | None, typer.Argument(help="[PIPELINE] [KEY=VALUE ...]: an sclora.toml (default: the workspace's) "
                         "and dotted overrides such as init.beta=0.95 train.lr=1e-4.", show_default=False,
                         metavar="[PIPELINE] [KEY=VALUE]")]


@handled
def new(
    directory: Annotated[Path, typer.Argument(help="Folder of the new workspace (created if missing).")] = Path("."),
    model: Annotated[str | None, typer.Option("--model", help="The model the workspace fine-tunes; default: the embedded "
            "smollm2-135m-instruct.")] = None,
    as_json: JsonFlag = False,
) -> dict:
    """Write a commented sclora.toml: the model, the + and - data, one table per stage, the gates."""
    path = write_template(directory, model)
    ui.console.print(f"wrote {path}: edit it, then `sclora run` (or `sclora status`)", highlight=False)
    return {"path": str(path.resolve())}


@handled
def run(
    arguments: PipelineArgs = None,
    only: Annotated[str | None, typer.Option("--only", help="Run just this stage (its inputs are used as they are).")] = None,
    start: Annotated[str | None, typer.Option("--from", help="Run this stage and the ones after it.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Re-run the selected stages even when they are up to date.")] = False,
    as_json: JsonFlag = False,
) -> dict:
    """Run the pipeline: calibrate -> init -> train -> merge -> eval -> push as declared, skipping up-to-date stages.

    Pushes only when the W0 check and every gate of eval.gates pass; a failed gate exits with code 8."""
    pipeline, overrides = split_arguments(arguments or [])
    report = run_pipeline(load_workspace(pipeline, overrides), only=only, start=start, force=force, progress=not as_json)
    if report.error is not None:
        report.error.result = report.to_dict()
        raise report.error
    return report.to_dict()


@handled
def status(arguments: PipelineArgs = None, as_json: JsonFlag = False) -> dict:
    """Each stage of the pipeline: done, stale (with the reason) or missing. Exits 0 only when all are done."""
    pipeline, overrides = split_arguments(arguments or [])
    workspace = load_workspace(pipeline, overrides)
    rows = stage_status(workspace)
    up_to_date = all(row.state == "done" for row in rows)
    table = Table(title=f"sclora status ({workspace.describe()})", title_justify="left")
    for column in ("stage", "state", "reason"):
        table.add_column(column)
    for row in rows:
        table.add_row(row.stage, row.state, row.reason)
    ui.show(table)
    document = {"workspace": workspace.describe(), "up_to_date": up_to_date, "stages": [row.to_dict() for row in rows]}
    if not up_to_date:
        behind = [f"{row.stage} ({row.state})" for row in rows if row.state != "done"]
        raise StaleError(f"not up to date: {', '.join(behind)}; `sclora run` brings them up to date.", result=document)
    return document
