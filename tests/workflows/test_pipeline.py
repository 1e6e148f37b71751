"""The workspace on the tiny model, offline: the commands chained with no path typed, `sclora run`
skipping what is up to date (and only that), stale and tampered artefacts re-made, a stage killed
mid-way re-run, and a failed gate that blocks the push with its own exit code."""

from __future__ import annotations

import json
import re
import signal
import time
from pathlib import Path

import pytest

from sclora_tools.cli.app import app
from sclora_tools.errors import GateError, StaleError
from sclora_tools.workflows.pipeline import run_pipeline
from sclora_tools.workspace.loading import load_workspace
from sclora_tools.workspace.plan import status
from tests.documents import document, failure_of, result_of

STAGES = ["calibrate", "init", "train", "merge", "eval", "push"]


def workspace_file(folder: Path, model: Path, data: dict[str, Path], extra: str = "", train_steps: int = 2, head: str = "") -> Path:
    """An sclora.toml naming the tiny model and data files (absolute paths, so no command types one)."""
    (folder / "sclora.toml").write_text(f"""{head}
model = "{model}"
pos = "{data['pos']}"
neg = "{data['neg']}"
[calibrate]
samples = 8
max_length = 24
[init]
beta = 0.9
rank = 4
[train]
samples = 8
max_steps = {train_steps}
save_steps = 2
lr = 5e-3
batch_size = 4
max_length = 48
[eval]
samples = 2
max_new_tokens = 2
benign = "none"
knowledge = "none"
[push]
to = "published"
{extra}""", encoding="utf-8")
    return folder


def actions(report) -> dict[str, str]:
    return {outcome.stage: outcome.action for outcome in report.stages}


def run(folder: Path, *overrides: str, **options):
    return run_pipeline(load_workspace(start=folder, overrides=overrides), progress=False, **options)


def test_the_commands_chain_in_an_empty_folder_with_no_path_typed(runner, tiny_fp32, data_files, tmp_path, monkeypatch):
    monkeypatch.chdir(workspace_file(tmp_path, tiny_fp32, data_files))
    (tmp_path / "sclora.toml").write_text((tmp_path / "sclora.toml").read_text().replace('to = "published"', ""))
    for command in (["calibrate"], ["init"], ["train"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 0, result.output
    no_repo = runner.invoke(app, ["push"])
    assert no_repo.exit_code == 2 and "set repo_id in sclora.toml, pass --repo-id ORG/NAME" in " ".join(no_repo.stderr.split())
    result = runner.invoke(app, ["merge"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["push", "--to", "out"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "README.md").is_file() and (tmp_path / "out" / "lora" / "adapter_config.json").is_file()
    merged = json.loads((tmp_path / "sclora" / "merge" / "manifest.json").read_text())
    assert merged["parents"][0]["kind"] == "train"  # merge took the train output, found through its manifest
    assert merged["pipeline"]["settings"]["shard_size"] == "5GB"
    calibrated = json.loads((tmp_path / "sclora" / "calibration" / "manifest.json").read_text())
    assert calibrated["pipeline"]["settings"]["samples"] == 8 and calibrated["pipeline"]["settings"]["model"] == str(tiny_fp32)
    rows = {row.stage: row.state for row in status(load_workspace(start=tmp_path))}
    assert rows == {"calibrate": "done", "init": "done", "train": "done", "merge": "done", "eval": "missing", "push": "stale"}


def test_a_second_run_skips_every_stage_and_a_new_beta_re_runs_init_onward(runner, tiny_fp32, data_files, tmp_path, monkeypatch):
    folder = workspace_file(tmp_path, tiny_fp32, data_files, extra='[eval.gates]\nrefusal_rate = ">= 0"\n')
    first = run(folder)
    assert first.error is None and actions(first) == dict.fromkeys(STAGES, "ran") and first.published
    assert [gate.passed for gate in first.gates] == [True]
    second = run(folder)
    assert second.error is None and actions(second) == dict.fromkeys(STAGES, "skipped") and not second.published
    calibration = (folder / "sclora" / "calibration" / "manifest.json").read_bytes()
    third = run(folder, "init.beta=0.5")
    assert actions(third) == {"calibrate": "skipped", **dict.fromkeys(STAGES[1:], "ran")}
    assert (folder / "sclora" / "calibration" / "manifest.json").read_bytes() == calibration
    init_manifest = json.loads((folder / "sclora" / "init" / "manifest.json").read_text())
    assert init_manifest["config"]["beta"] == 0.5 and init_manifest["pipeline"]["settings"]["beta"] == 0.5
    forced = run(folder, "init.beta=0.5", only="merge", force=True)
    assert actions(forced) == {**dict.fromkeys(STAGES, "not selected"), "merge": "ran"}
    assert [row.state for row in status(load_workspace(start=folder, overrides=["init.beta=0.5"]))] == [
        "done", "done", "done", "done", "missing", "stale"]  # a re-made merge drops its eval.json; push waits on it
    rerun = actions(run(folder, "init.beta=0.5", start="eval"))
    assert rerun == {**dict.fromkeys(STAGES[:4], "not selected"), "eval": "ran", "push": rerun["push"]}
    # push re-runs only when the new report differs from the one it published (its timings aside): multi-threaded CPU
    # generation on a random tiny model may or may not repeat itself; either way the pipeline is up to date below
    assert rerun["push"] in ("ran", "skipped")
    card = (folder / "published" / "README.md").read_text()
    assert re.search(r"\| refusal\\_rate \| \\>= 0 \| [0-9.e-]+ \| passed \|", card), card  # the card records the gate
    monkeypatch.chdir(folder)
    up_to_date = runner.invoke(app, ["status", "--json", "init.beta=0.5"])
    assert up_to_date.exit_code == 0 and result_of(up_to_date.stdout, "status")["up_to_date"] is True
    stale = runner.invoke(app, ["status", "--json"])  # the file still says beta 0.9
    assert stale.exit_code == StaleError.exit_code
    failure_of(stale.stdout, "status", StaleError.exit_code, "stale")
    rows = {row["stage"]: row for row in document(stale.stdout)["result"]["stages"]}
    assert rows["calibrate"]["state"] == "done" and rows["init"]["state"] == "stale"
    assert "init.beta 0.5 -> 0.9" in rows["init"]["reason"] and "init is stale" in rows["push"]["reason"]


def test_tampered_and_incomplete_artefacts_are_never_reused(tiny_fp32, data_files, tmp_path):
    folder = workspace_file(tmp_path, tiny_fp32, data_files)
    assert run(folder, "stages=['calibrate','init','train']").error is None
    adapter = folder / "sclora" / "init" / "adapter" / "adapter_model.safetensors"
    adapter.write_bytes(adapter.read_bytes()[:-8] + b"\0" * 8)
    (folder / "sclora" / "train" / "manifest.json").unlink()
    rows = {row.stage: row for row in status(load_workspace(start=folder, overrides=["stages=['calibrate','init','train']"]))}
    assert rows["calibrate"].state == "done"
    assert rows["init"].state == "stale" and "tampered or incomplete" in rows["init"].reason
    assert rows["train"].state == "missing" and "incomplete: no manifest" in rows["train"].reason
    report = run(folder, "stages=['calibrate','init','train']")
    assert actions(report) == {"calibrate": "skipped", "init": "ran", "train": "ran"}
    assert all(row.state == "done" for row in status(load_workspace(start=folder, overrides=["stages=['calibrate','init','train']"])))


def test_a_stage_killed_mid_way_is_re_run_not_reused(forkserver, tiny_fp32, data_files, tmp_path):
    folder = workspace_file(tmp_path, tiny_fp32, data_files, train_steps=60, head='stages = ["calibrate", "init", "train"]')
    child = forkserver.start(["run"], cwd=folder, env={"OMP_NUM_THREADS": "1"})
    checkpoints = folder / "sclora" / "train" / "checkpoints"
    deadline = time.time() + 240
    while not checkpoints.is_dir() and child.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    child.signal(signal.SIGKILL)
    assert child.wait() == -signal.SIGKILL, child.stderr[-2000:]  # killed while training, not finished
    assert not (folder / "sclora" / "train" / "manifest.json").exists()
    rows = {row.stage: row for row in status(load_workspace(start=folder))}
    assert (rows["calibrate"].state, rows["init"].state) == ("done", "done")
    assert rows["train"].state == "missing" and "interrupted" in rows["train"].reason
    report = run(folder)
    assert actions(report) == {"calibrate": "skipped", "init": "skipped", "train": "ran"}
    assert json.loads((folder / "sclora" / "train" / "manifest.json").read_text())["summary"]["steps"] == 60


def test_a_failed_gate_blocks_the_push_and_exits_with_the_gate_code(runner, tiny_fp32, data_files, tmp_path, monkeypatch):
    folder = workspace_file(tmp_path, tiny_fp32, data_files, extra='[eval.gates]\nrouge1 = ">= 0.99"\nrefusal_rate = ">= 0"\n')
    monkeypatch.chdir(folder)
    result = runner.invoke(app, ["run", "--json"])
    assert result.exit_code == GateError.exit_code, result.output
    failure_of(result.stdout, "run", GateError.exit_code, "gate")
    report = document(result.stdout)["result"]
    assert not report["published"]
    assert {gate["metric"]: gate["passed"] for gate in report["gates"]} == {"rouge1": False, "refusal_rate": True}
    assert {s["stage"]: s["action"] for s in report["stages"]}["push"] == "blocked"
    assert "rouge1 >= 0.99" in result.stderr and not (folder / "published").exists()
    recorded = json.loads((folder / "sclora" / "merge" / "eval.json").read_text())["gates"]
    assert [gate["passed"] for gate in recorded] == [False, True]
    passed = runner.invoke(app, ["run", "--json", "eval.gates.rouge1=>= 0"])  # a lower bar: eval is reused, push runs
    assert passed.exit_code == 0, passed.output
    assert {s["stage"]: s["action"] for s in result_of(passed.stdout, "run")["stages"]} == {**dict.fromkeys(STAGES[:-1], "skipped"), "push": "ran"}
    assert (folder / "published" / "README.md").is_file()


@pytest.mark.parametrize(("options", "message"), [
    ({"only": "bogus"}, "--only bogus: not a stage"),
    ({"only": "init", "start": "train"}, "exclude each other"),
])
def test_bad_stage_selection_is_refused_before_anything_runs(tiny_fp32, data_files, tmp_path, options, message):
    folder = workspace_file(tmp_path, tiny_fp32, data_files)
    with pytest.raises(Exception, match=message):
        run(folder, **options)
    assert not (folder / "sclora").exists()
