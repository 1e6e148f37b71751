"""`sclora run`: the workspace's declared stages in order, each skipped when its identity matches a
finished, verified artefact (workspace/plan.py), then the gates on the eval metrics and the W0
check; push runs only when both pass."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from .. import ui
from ..errors import GateError, ScloraError, UsageError, VerificationError
from ..io.atomic import write_json
from ..io.manifest import load_manifest
from ..workspace.gates import GateResult, check_conditions, evaluate_gates
from ..workspace.loading import Workspace
from ..workspace.plan import expected, output_of, verdict
from ..workspace.schema import STAGES
from .workspace_stages import require, run_stage


@dataclass
class StageOutcome:
    """ran, skipped (up to date), blocked (a gate or the W0 check), failed, or not selected."""

    stage: str
    action: str
    reason: str = ""
    seconds: float = 0.0
    output: str = ""

    def to_dict(self) -> dict:
        return {"stage": self.stage, "action": self.action, "reason": self.reason, "seconds": self.seconds, "output": self.output}


@dataclass
class PipelineReport:
    workspace: str
    stages: list[StageOutcome] = field(default_factory=list)
    gates: list[GateResult] = field(default_factory=list)
    published: bool = False
    error: ScloraError | None = None

    @property
    def exit_code(self) -> int:
        return 0 if self.error is None else self.error.exit_code

    def to_dict(self) -> dict:
        return {"workspace": self.workspace, "published": self.published,
                "stages": [s.to_dict() for s in self.stages], "gates": [g.to_dict() for g in self.gates]}


def selected_stages(workspace: Workspace, only: str | None, start: str | None) -> list[str]:
    declared = list(workspace.config.stages)
    for option, stage in (("--only", only), ("--from", start)):
        if stage is not None and stage not in declared:
            raise UsageError(f"{option} {stage}: not a stage of this pipeline; choose one of {', '.join(declared)}.")
    if only is not None and start is not None:
        raise UsageError("--only and --from exclude each other; give one.")
    if only is not None:
        return [only]
    return declared[declared.index(start):] if start is not None else declared


def check_pipeline(workspace: Workspace, stages: list[str]) -> None:
    require(workspace, stages)
    gates = workspace.config.eval.gates
    check_conditions(gates)
    if gates and "push" in workspace.config.stages and "eval" not in workspace.config.stages:
        raise UsageError("eval.gates are set but eval is not in stages; add eval to stages, or remove the gates.")
    unknown = [stage for stage in stages if stage not in STAGES]
    if unknown:
        raise UsageError(f"unknown stage {unknown[0]}; the stages are {', '.join(STAGES)}.")


def run_pipeline(workspace: Workspace, only: str | None = None, start: str | None = None, force: bool = False,
                 progress: bool = True) -> PipelineReport:
    """Run the selected stages; a stage's failure, a failed gate or a failed W0 check stops the run and
    is the report's `error` (the caller exits with its code)."""
    stages = selected_stages(workspace, only, start)
    check_pipeline(workspace, stages)
    report = PipelineReport(workspace=workspace.describe())
    for stage in workspace.config.stages:
        if stage not in stages:
            report.stages.append(StageOutcome(stage, "not selected", output=str(output_of(workspace, stage))))
            continue
        if report.error is not None:
            report.stages.append(StageOutcome(stage, "not run", "an earlier step stopped the run"))
            continue
        report.stages.append(step(workspace, stage, force, progress, report))
    show_report(report)
    return report


def step(workspace: Workspace, stage: str, force: bool, progress: bool, report: PipelineReport) -> StageOutcome:
    output = str(output_of(workspace, stage))
    if stage == "push":
        blocked = publish_blocker(workspace, report)
        if blocked is not None:
            report.error = blocked
            return StageOutcome(stage, "blocked", str(blocked), output=output)
    found = verdict(workspace, stage, expected(workspace, stage))
    ui.console.rule(f"[bold]{stage}")
    began = time.time()
    if found.done and not force:
        ui.console.print(f"{stage}: up to date, skipped ({output})", highlight=False)
        outcome = StageOutcome(stage, "skipped", "up to date", output=output)
    else:
        reason = "--force" if found.done else f"{found.state}: {found.reason}"
        try:
            run_stage(workspace, stage, in_pipeline=True, progress=progress)
        except ScloraError as exc:
            report.error = exc
            return StageOutcome(stage, "failed", str(exc), round(time.time() - began, 1), output)
        outcome = StageOutcome(stage, "ran", reason, round(time.time() - began, 1), output)
        report.published = report.published or stage == "push"
    if stage == "eval":
        report.gates = apply_gates(workspace)
    return outcome


def apply_gates(workspace: Workspace) -> list[GateResult]:
    """Check the gates on the eval metrics and record them (with their results) in eval.json, where the card reads them."""
    path = workspace.eval_file
    document = json.loads(path.read_text(encoding="utf-8"))
    results = evaluate_gates(workspace.config.eval.gates, document.get("metrics") or {})
    write_json(path, {**document, "gates": [result.to_dict() for result in results]})
    for result in results:
        ui.console.print(f"gate {result.describe()}", highlight=False)
    return results


def publish_blocker(workspace: Workspace, report: PipelineReport) -> ScloraError | None:
    """Why push must not run: a failed gate or a failed W0 check (None: publish)."""
    if workspace.config.eval.gates and not report.gates:
        if not workspace.eval_file.is_file():
            return GateError("the gates need eval results and there are none; run the eval stage first, nothing was published.")
        report.gates = apply_gates(workspace)
    failed = [gate for gate in report.gates if not gate.passed]
    if failed:
        listed = "; ".join(gate.describe() for gate in failed)
        return GateError(f"{len(failed)} gate(s) failed ({listed}); nothing was published: improve the model or change [eval.gates].")
    verification = load_manifest(workspace.folder("merge"), "merge").verification
    if verification is None or not verification.all_passed():
        return VerificationError("the merge's W0 check did not pass; nothing was published, re-run init and merge.")
    return None


def show_report(report: PipelineReport) -> None:
    rows = [(o.stage, f"{o.action}{f' ({o.reason})' if o.reason and o.action != 'skipped' else ''}") for o in report.stages]
    rows += [(f"gate {g.metric}", g.describe().split(": ", 1)[1]) for g in report.gates]
    rows.append(("published", "yes" if report.published else "no"))
    ui.show(ui.summary_table(f"sclora run ({report.workspace})", rows))
