"""`--json` on every command: one document on stdout, valid against the schema the package ships,
for a success and for a failure (the error's kind, its sentence, the exit code), and none of it
mixed with what people read on stderr."""

from __future__ import annotations

import json

import pytest
import typer

from sclora_tools.cli.app import app, run_app
from sclora_tools.errors import EXIT_INTERNAL, InputError
from sclora_tools.machine_output import schema_commands, strict, success
from sclora_tools.stages import init as init_stage
from tests.cli.commands import squeeze
from tests.documents import document, failure_of, result_of

COMMANDS = typer.main.get_command(app).commands


def test_the_schema_describes_every_command_and_every_command_has_json():
    assert sorted(schema_commands()) == sorted(COMMANDS)
    for name, command in COMMANDS.items():
        assert any("--json" in param.opts for param in command.params), name


def test_train_and_merge_print_their_manifest(runner, init_run, data_files, tmp_path):
    trained = runner.invoke(app, ["train", str(init_run), "-o", str(tmp_path / "trained"), "--data", str(data_files["pos"]),
                                  "--samples", "8", "--max-steps", "1", "--batch-size", "4", "--max-length", "48", "--json"])
    assert trained.exit_code == 0, trained.output
    manifest = result_of(trained.stdout, "train")
    assert manifest == json.loads((tmp_path / "trained" / "manifest.json").read_text()) and manifest["summary"]["steps"] == 1
    merged = runner.invoke(app, ["merge", str(tmp_path / "trained"), "-o", str(tmp_path / "merged"), "--json"])
    assert merged.exit_code == 0, merged.output
    assert result_of(merged.stdout, "merge")["verification"]["passed"] is True


def test_demo_prints_its_results(runner, tiny_fp32, tmp_path):
    result = runner.invoke(app, ["demo", "-o", str(tmp_path / "demo"), "--model", str(tiny_fp32), "--steps", "1", "--eval-samples", "1",
                                 "--json"])
    assert result.exit_code == 0, result.output
    results = result_of(result.stdout, "demo")
    assert results["verification_passed"] is True and results["output"] == str(tmp_path / "demo")
    assert set(results["seconds"]) == {"start", "calibrate", "init", "train", "merge", "eval", "push", "lora", "total"}
    assert [row["model"] for row in results["comparison"]] == ["start (W0)", "LoRA", "SC-LoRA b=0.9"]  # no shipped row: not an aligned start
    assert (tmp_path / "demo" / "publish" / "README.md").is_file()


def failing_argv(command: str, missing: str, out: str) -> list[str]:
    """`command` pointed at a folder that does not exist."""
    return {
        "calibrate": ["calibrate", missing, "--pos", "dialogsum", "--neg", "safety", "-o", out],
        "init": ["init", missing, "-o", out],
        "sweep": ["sweep", missing],
        "train": ["train", missing, "-o", out],
        "merge": ["merge", missing, "-o", out],
        "eval": ["eval", missing],
        "push": ["push", missing, "--repo-id", "org/name", "--to", out],
        "demo": ["demo", "--model", missing, "-o", out],
        "run": ["run", f"{missing}/sclora.toml"],
        "status": ["status", f"{missing}/sclora.toml"],
    }[command]


@pytest.mark.parametrize("command", sorted(set(COMMANDS) - {"new"}))  # new makes its folder: its failure is below
def test_a_missing_folder_fails_with_a_document(runner, command, tmp_path):
    result = runner.invoke(app, [*failing_argv(command, str(tmp_path / "missing"), str(tmp_path / "out")), "--json"])
    assert result.exit_code == InputError.exit_code, result.output
    error = failure_of(result.stdout, command, InputError.exit_code, "input")
    assert "missing" in error["message"] and squeeze(error["message"]) in squeeze(result.stderr)  # the sentence people read


def test_new_over_an_existing_workspace_fails_with_a_document(runner, tmp_path):
    assert runner.invoke(app, ["new", str(tmp_path)]).exit_code == 0
    result = runner.invoke(app, ["new", str(tmp_path), "--json"])
    error = failure_of(result.stdout, "new", InputError.exit_code, "input")
    assert "already exists" in error["message"] and result.exit_code == InputError.exit_code


def test_without_json_a_failure_prints_nothing_on_stdout(runner, tmp_path):
    result = runner.invoke(app, ["init", str(tmp_path / "missing"), "-o", str(tmp_path / "out")])
    assert result.exit_code == InputError.exit_code and result.stdout == ""


def test_an_internal_error_is_a_document_too(runner, calibration, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(init_stage, "init", broken)
    result = runner.invoke(app, ["init", str(calibration), "-o", str(tmp_path / "out"), "--json"])
    assert result.exit_code == EXIT_INTERNAL
    error = failure_of(result.stdout, "init", EXIT_INTERNAL, "internal")
    assert error["message"].startswith("RuntimeError: boom") and "SCLORA_DEBUG=1" in error["message"]


@pytest.mark.parametrize("argv,command,phrase", [
    (["init", "calib", "-o", "run", "--rank", "many", "--json"], "init", "--rank"),
    (["train", "run", "-o", "out", "--max-steps", "-1x", "--json"], "train", "--max-steps"),
    (["init", "calib", "-o", "run", "--no-such-option", "--json"], "init", "--no-such-option"),
    (["no-such-command", "--json"], None, "no-such-command"),
])
def test_a_command_line_the_parser_refuses_is_a_usage_failure(capfd, argv, command, phrase):
    assert run_app(argv) == 2
    printed = capfd.readouterr()
    error = failure_of(printed.out, command, 2, "usage")
    assert phrase in error["message"] and phrase in printed.err  # click's own message, on stderr as before


def test_the_parser_refusal_without_json_keeps_stdout_empty(capfd):
    assert run_app(["init", "calib", "-o", "run", "--rank", "many"]) == 2
    printed = capfd.readouterr()
    assert printed.out == "" and "--rank" in printed.err


def test_help_and_a_success_exit_zero_through_the_entry_point(capfd):
    assert run_app(["init", "--help"]) == 0
    assert "sclora init" in capfd.readouterr().out  # --help is the one thing written for people on stdout


def test_every_document_is_strict_json():
    """A NaN (a metric of an empty set) would make the document unreadable to strict parsers: it becomes null."""
    parsed = document(json.dumps(strict(success("eval", {"schema_version": 1, "tool": {}, "model": {}, "metrics": {"x": float("nan")},
                                                         "sets": {}, "settings": {}, "seconds": {}})), allow_nan=False))
    assert parsed["result"]["metrics"]["x"] is None
